"""Element changes of one submodel that arrive together share one journaled document and one commit (issue 12).

32 clients PUT elements of one submodel at once: far fewer commits than writes, each client answered
only once its change is durable, every change announced on the change bus, and after a restart each
element holds what its client had acknowledged. In a batch a refused change fails alone, and a
change that does not fit on the disk fails alone while the rest of its batch is stored.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from basyx.aas import model

from aas_server.config import HistorySettings, HubSettings, OpcUaSettings, RestSettings, SecuritySettings
from aas_server.errors import InvalidRequestError, StorageFullError
from aas_server.persistence.sqlite import SqliteRepository
from aas_server.runtime.hub import Hub
from aas_server.store.twin_store import ModelChanged, TwinStore
from tests.support import wait_until

SUBMODEL = "urn:test:element-batches:sm"
CLIENTS = 32
WRITES_PER_CLIENT = 10


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def hub_settings(data_dir: Path) -> HubSettings:
    return HubSettings(
        data_dir=data_dir,
        rest=RestSettings(port=0),
        opcua=OpcUaSettings(enabled=False),
        history=HistorySettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )


def int_property(id_short: str, value: int) -> dict[str, Any]:
    return {"modelType": "Property", "idShort": id_short, "valueType": "xs:int", "value": str(value)}


async def test_concurrent_puts_of_elements_of_one_submodel_share_commits_and_survive_a_restart(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path)
    acknowledged: dict[str, int] = {}
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        api = hub.rest_url
        submodel = {
            "modelType": "Submodel",
            "id": SUBMODEL,
            "idShort": "Batches",
            "submodelElements": [int_property(f"C{client}", 0) for client in range(CLIENTS)]
            + [int_property("Shared", 0)],
        }
        async with http.post(f"{api}/submodels", json=submodel) as response:
            assert response.status == 201, await response.text()
        announced = hub.store.bus.subscribe("test")
        commits = hub.repository.committer.statistics.commits
        elements = f"{api}/submodels/{b64(SUBMODEL)}/submodel-elements"
        shared: list[int] = []

        async def client(number: int) -> None:
            for write in range(1, WRITES_PER_CLIENT + 1):
                value = number * 1000 + write
                async with http.put(f"{elements}/C{number}", json=int_property(f"C{number}", value)) as response:
                    assert response.status == 204, await response.text()
                acknowledged[f"C{number}"] = value
                # what was acknowledged is what a reader sees
                async with http.get(f"{elements}/C{number}/$value") as response:
                    assert await response.json() == {f"C{number}": value}
                async with http.put(f"{elements}/Shared", json=int_property("Shared", value)) as response:
                    assert response.status == 204, await response.text()
                shared.append(value)

        await asyncio.gather(*(client(number) for number in range(CLIENTS)))
        writes = 2 * CLIENTS * WRITES_PER_CLIENT
        made = hub.repository.committer.statistics.commits - commits
        assert made < writes / 4, f"{writes} concurrent PUTs took {made} commits"
        # every change is announced (OPC UA and MQTT events follow the bus), in the order it was applied
        await wait_until(lambda: announced.qsize() >= writes, what="every PUT announced")
        changes = [event for event in announced.get_nowait_all() if isinstance(event, ModelChanged)]
        assert len(changes) == writes
        assert {change.id_short_path for change in changes} == {f"C{n}" for n in range(CLIENTS)} | {"Shared"}
        async with http.get(f"{elements}/Shared/$value") as response:
            last_shared = (await response.json())["Shared"]
        assert last_shared in shared

    async with (
        Hub(settings) as hub,
        aiohttp.ClientSession() as http,
        http.get(f"{hub.rest_url}/submodels/{b64(SUBMODEL)}/$value") as response,
    ):
        assert await response.json() == {**acknowledged, "Shared": last_shared}


async def _queued_behind_the_lock(store: TwinStore, writes: list[Any]) -> list[BaseException | None]:
    """Run ``writes`` (coroutines) as one batch: the submodel's lock is held until all of them are queued."""
    lock = store.change_lock(SUBMODEL)
    await lock.acquire()
    try:
        tasks = [asyncio.ensure_future(write) for write in writes]
        await wait_until(lambda: len(store._element_queues.get(SUBMODEL, ())) == len(writes), what="all queued")
    finally:
        lock.release()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return [result if isinstance(result, BaseException) else None for result in results]


def values_of(submodel: model.Submodel) -> list[object]:
    return [element.value for element in submodel.submodel_element if isinstance(element, model.Property)]


def three_properties() -> model.Submodel:
    return model.Submodel(
        SUBMODEL, id_short="Batches", submodel_element=[model.Property(f"P{n}", str, "0") for n in range(3)]
    )


async def test_a_refused_change_in_a_batch_fails_alone_and_the_others_share_one_commit(tmp_path: Path) -> None:
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        store = TwinStore(journal=repository)
        await store.create(three_properties())
        commits = repository.committer.statistics.commits
        errors = await _queued_behind_the_lock(
            store,
            [
                store.replace_element(SUBMODEL, "P0", model.Property("P0", str, "a")),
                store.replace_element(SUBMODEL, "P1", model.Property("Other", str, "b")),
                store.replace_element(SUBMODEL, "P2", model.Property("P2", str, "c")),
            ],
        )
        assert errors[0] is None
        assert errors[2] is None
        assert isinstance(errors[1], InvalidRequestError)
        assert "differs from the path's" in str(errors[1])
        assert repository.committer.statistics.commits - commits == 1
        assert values_of(store.submodel(SUBMODEL)) == ["a", "0", "c"]
        (loaded,) = await repository.load_identifiables()
    assert isinstance(loaded, model.Submodel)
    assert values_of(loaded) == ["a", "0", "c"]


async def test_a_change_that_does_not_fit_on_the_disk_fails_alone_the_rest_of_its_batch_is_stored(
    tmp_path: Path,
) -> None:
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        store = TwinStore(journal=repository)
        await store.create(three_properties())
        await repository.set_size_limit(0)  # the database may not grow: a full disk
        errors = await _queued_behind_the_lock(
            store,
            [
                store.replace_element(SUBMODEL, "P0", model.Property("P0", str, "a")),
                store.replace_element(SUBMODEL, "P1", model.Property("P1", str, "x" * 200_000)),
                store.replace_element(SUBMODEL, "P2", model.Property("P2", str, "c")),
            ],
        )
        assert errors[0] is None
        assert errors[2] is None
        assert isinstance(errors[1], StorageFullError)
        assert repository.committer.statistics.retried_alone == 0  # one unit: the store tried each change alone
        # memory shows what is stored: the refused change was undone, the others kept, in their places
        assert values_of(store.submodel(SUBMODEL)) == ["a", "0", "c"]
        (loaded,) = await repository.load_identifiables()
    assert isinstance(loaded, model.Submodel)
    assert values_of(loaded) == ["a", "0", "c"]


@pytest.mark.parametrize("kind", ["create", "delete"])
async def test_creates_and_deletes_of_elements_batch_with_replacements(tmp_path: Path, kind: str) -> None:
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        store = TwinStore(journal=repository)
        await store.create(three_properties())
        other = (
            store.create_element(SUBMODEL, None, model.Property("P3", str, "new"))
            if kind == "create"
            else store.delete_element(SUBMODEL, "P1")
        )
        errors = await _queued_behind_the_lock(
            store, [store.replace_element(SUBMODEL, "P0", model.Property("P0", str, "a")), other]
        )
        assert errors == [None, None]
        expected = ["a", "0", "0", "new"] if kind == "create" else ["a", "0"]
        assert values_of(store.submodel(SUBMODEL)) == expected
        (loaded,) = await repository.load_identifiables()
    assert isinstance(loaded, model.Submodel)
    assert values_of(loaded) == expected


@pytest.mark.parametrize("batches", [True, False])
async def test_element_batches_can_be_switched_off_one_commit_per_change(tmp_path: Path, batches: bool) -> None:
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        store = TwinStore(journal=repository, element_batches=batches)
        await store.create(three_properties())
        commits = repository.committer.statistics.commits
        errors = await _queued_behind_the_lock(
            store, [store.replace_element(SUBMODEL, f"P{n}", model.Property(f"P{n}", str, f"v{n}")) for n in range(3)]
        )
        assert errors == [None, None, None]
        assert repository.committer.statistics.commits - commits == (1 if batches else 3)
        (loaded,) = await repository.load_identifiables()
    assert isinstance(loaded, model.Submodel)
    assert values_of(loaded) == ["v0", "v1", "v2"]


async def test_a_client_that_goes_away_does_not_stop_its_change_or_the_batch(tmp_path: Path) -> None:
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        store = TwinStore(journal=repository)
        await store.create(three_properties())
        lock = store.change_lock(SUBMODEL)
        await lock.acquire()
        try:
            gone = asyncio.ensure_future(store.replace_element(SUBMODEL, "P0", model.Property("P0", str, "a")))
            staying = asyncio.ensure_future(store.replace_element(SUBMODEL, "P1", model.Property("P1", str, "b")))
            await wait_until(lambda: len(store._element_queues.get(SUBMODEL, ())) == 2, what="both queued")
            gone.cancel()
        finally:
            lock.release()
        await staying
        with pytest.raises(asyncio.CancelledError):
            await gone
        await wait_until(lambda: SUBMODEL not in store._element_drains, what="the batch done")
        assert values_of(store.submodel(SUBMODEL)) == ["a", "b", "0"]
        (loaded,) = await repository.load_identifiables()
    assert isinstance(loaded, model.Submodel)
    assert values_of(loaded) == ["a", "b", "0"]

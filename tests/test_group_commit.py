"""Group commit (issue 12, item 3): concurrent durable writes share one transaction and its fsync.

Writers queued while a commit is in flight go into the next one; each client is answered only once
its own write is on disk; a unit that fails (a constraint, a full disk) fails only its own writer and
leaves nothing half-written, while the other writes of its batch are stored.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from basyx.aas import model

from aas_server.config import HistorySettings, HubSettings, OpcUaSettings, RestSettings, SecuritySettings
from aas_server.errors import PersistenceError, StorageFullError
from aas_server.model.events import Quality, QualityReason, ValueChanged, utc_now
from aas_server.persistence.group_commit import Settle
from aas_server.persistence.sqlite import SqliteRepository
from aas_server.runtime.hub import Hub
from tests.support import wait_until

SUBMODEL = "urn:test:group-commit:sm"
CLIENTS = 32
WRITES_PER_CLIENT = 15


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


def counters_submodel() -> dict[str, Any]:
    return {
        "modelType": "Submodel",
        "id": SUBMODEL,
        "idShort": "Counters",
        "submodelElements": [
            {"modelType": "Property", "idShort": f"C{client}", "valueType": "xs:int", "value": "0"}
            for client in range(CLIENTS)
        ],
    }


async def test_concurrent_rest_writes_share_commits_and_every_acknowledged_one_survives_a_restart(
    tmp_path: Path,
) -> None:
    """32 clients write their own Property of one submodel concurrently: fewer commits than writes, and
    after a restart each Property holds the last value its client had acknowledged."""
    settings = hub_settings(tmp_path)
    acknowledged: dict[str, int] = {}
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        api = hub.rest_url
        async with http.post(f"{api}/submodels", json=counters_submodel()) as response:
            assert response.status == 201, await response.text()
        committer = hub.repository.committer
        assert committer.enabled
        before = committer.statistics.commits

        async def client(number: int) -> None:
            url = f"{api}/submodels/{b64(SUBMODEL)}/submodel-elements/C{number}/$value"
            for value in range(1, WRITES_PER_CLIENT + 1):
                async with http.patch(url, json=number * 1000 + value) as response:
                    assert response.status == 204, await response.text()
                acknowledged[f"C{number}"] = number * 1000 + value
                # what was acknowledged is what a reader sees
                async with http.get(url) as response:
                    assert await response.json() == {f"C{number}": number * 1000 + value}

        await asyncio.gather(*(client(number) for number in range(CLIENTS)))
        commits = committer.statistics.commits - before
        writes = CLIENTS * WRITES_PER_CLIENT
        assert commits < writes / 2, f"{writes} concurrent writes took {commits} commits"
        assert committer.statistics.largest_batch > 1

    async with (
        Hub(settings) as hub,
        aiohttp.ClientSession() as http,
        http.get(f"{hub.rest_url}/submodels/{b64(SUBMODEL)}/$value") as response,
    ):
        assert await response.json() == acknowledged


def change(path: str, value: int) -> ValueChanged:
    now = utc_now()
    return ValueChanged(SUBMODEL, path, value, now, Quality.GOOD, QualityReason.NONE, now, "test")


async def _held_batch(repository: SqliteRepository, writes: list[Callable[[], Any]]) -> list[BaseException | None]:
    """Run ``writes`` as one batch: the database thread is held until all of them are queued."""
    holding, release = threading.Event(), threading.Event()

    def hold(database: sqlite3.Connection) -> Settle | None:
        holding.set()
        release.wait(10)
        return None

    holder = asyncio.ensure_future(repository.committer.submit(hold))
    await wait_until(holding.is_set, what="the database thread held")
    tasks = [asyncio.ensure_future(write()) for write in writes]
    await wait_until(lambda: len(repository.committer._queue) == len(writes), what="all writes queued")
    release.set()
    await holder
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return [result if isinstance(result, BaseException) else None for result in results]


def stored_values(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as database:
        rows = database.execute("SELECT id_short_path, value FROM property_values").fetchall()
    return dict(rows)


async def test_a_unit_that_fails_in_a_batch_fails_alone_and_writes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "hub.sqlite"
    async with SqliteRepository(database) as repository:
        commits = repository.committer.statistics.commits

        def bad(connection: sqlite3.Connection) -> Settle | None:
            connection.execute("INSERT INTO property_values (submodel_id, id_short_path) VALUES ('x', 'half')")
            return None

        async def failing() -> None:
            try:
                await repository.committer.submit(bad)
            except sqlite3.Error as error:
                raise PersistenceError(str(error)) from error

        errors = await _held_batch(
            repository,
            [
                lambda: repository.persist_values([change("A", 1)]),
                failing,
                lambda: repository.persist_values([change("B", 2)]),
            ],
        )
        assert errors[0] is None
        assert errors[2] is None
        assert isinstance(errors[1], PersistenceError)
        assert "NOT NULL" in str(errors[1])
        # the holder alone; the batch of three failed whole, then each was run alone: two of them stored
        assert repository.committer.statistics.commits - commits == 3
        assert repository.committer.statistics.retried_alone == 3
    assert stored_values(database) == {"A": "1", "B": "2"}


async def test_a_write_that_does_not_fit_on_the_disk_fails_alone_the_rest_of_its_batch_is_stored(
    tmp_path: Path,
) -> None:
    database = tmp_path / "hub.sqlite"
    async with SqliteRepository(database) as repository:
        await repository.persist_values([change("A", 0), change("B", 0)])
        await repository.set_size_limit(0)  # the database may not grow: a full disk
        big = model.Submodel(
            "urn:test:group-commit:big",
            submodel_element=[model.Property("Text", str, "x" * 200_000)],
        )
        errors = await _held_batch(
            repository,
            [
                lambda: repository.persist_values([change("A", 1)]),
                lambda: repository.save_identifiables([big]),
                lambda: repository.persist_values([change("B", 2)]),
            ],
        )
        assert errors[0] is None
        assert errors[2] is None
        assert isinstance(errors[1], StorageFullError)
        assert "not stored" in str(errors[1])
        assert repository.committer.statistics.retried_alone >= 2
    assert stored_values(database) == {"A": "1", "B": "2"}
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT COUNT(*) FROM identifiables").fetchone() == (0,)


@pytest.mark.parametrize("enabled", [True, False])
async def test_group_commit_can_be_switched_off_one_commit_per_write(tmp_path: Path, enabled: bool) -> None:
    database = tmp_path / "hub.sqlite"
    async with SqliteRepository(database, group_commit=enabled) as repository:
        commits = repository.committer.statistics.commits
        errors = await _held_batch(
            repository,
            [functools.partial(repository.persist_values, [change(f"P{number}", number)]) for number in range(8)],
        )
        assert errors == [None] * 8
        assert repository.committer.statistics.commits - commits == (2 if enabled else 9)
    assert stored_values(database) == {f"P{number}": str(number) for number in range(8)}

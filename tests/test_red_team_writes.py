"""Red team of issue 12's element batches and typed-once sample path (findings W1-W3 of ``docs/security.md``).

Each test is an attack that worked before its fix:

- W1: a change refused in a batch because of an earlier change of the same batch stayed refused
  when that earlier change was undone (it did not fit on the disk): the client was told an element
  exists that is not stored.
- W2: a model change (PUT of an element, of its collection or of the submodel) gave a device-bound
  Property the body's value with GOOD quality, without the device: a read-only sensor that is offline
  showed a client's made-up reading as good, and the document kept it over a restart.
- W4: a GET while an element change was being journaled cached the changed body under the
  submodel's current content version; when the commit then failed and the change was undone, that
  body (never stored) was served from the cache until the next change.
- W5: deleting an earlier item of a SubmodelElementList shifted a device-bound item's index: the
  device's values then went silently into the item that moved into the bound index.
- W6: xs:float took any double (1e300): a client write or a device sample was accepted, after which
  every OPC UA read of the node was BadInternalError (a Float variant cannot hold it).
- W7: a POST (or a PUT creating an element) whose element a later change of the same batch deleted
  was answered 404 although it was stored and announced: the answer body was read back by path.
- W8: a PUT or POST of an element with an idShort into a SubmodelElementList (AASd-120 forbids one)
  was answered 204/201 and shown with its idShort, but the stored document drops it: after a restart
  the element had none, so memory and disk disagreed.
- W3: a device point without normalisation publishing the text ``"NaN"`` or ``"Infinity"`` put a
  GOOD non-finite value into an xs:decimal (which has none) or an xs:double Property, where the float
  ``nan`` of the same device is flagged BAD, SENSOR_FAILURE; a client could write ``"NaN"`` into an
  xs:decimal through ``$value``.

Two integrator checks found nothing beyond W7 and stay as regressions: a storm of mixed element
changes on a full disk (memory, disk and the change bus in step) and OPC UA writes racing batches of
REST PUTs of the same submodel (every answer as stored, also after a restart).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import yaml
from asyncua import ua
from asyncua.client.client import Client
from basyx.aas import model
from basyx.aas.model import datatypes
from pydantic import SecretStr

from aas_server.config import (
    HistorySettings,
    HubSettings,
    OpcUaSettings,
    RestSettings,
    Role,
    SecurityPolicyName,
    SecuritySettings,
    UserSettings,
)
from aas_server.devices.modbus_server import ModbusDeviceServer
from aas_server.errors import ConflictError, StorageFullError
from aas_server.mapping import codecs
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.schema import DataType, Table, parse_mapping
from aas_server.model.events import Quality, QualityReason, RawSample, ValueChanged, utc_now
from aas_server.persistence.group_commit import Settle
from aas_server.persistence.sqlite import SqliteRepository
from aas_server.runtime.hub import Hub
from aas_server.store.twin_store import ElementBinding, ModelChanged, TwinStore
from tests.support import wait_until

SUBMODEL = "urn:test:red-team-writes:sm"


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def bare_settings(tmp_path: Path) -> HubSettings:
    """A hub without OPC UA, history or access control, storing in ``tmp_path``."""
    return HubSettings(
        data_dir=tmp_path / "data",
        rest=RestSettings(port=0),
        opcua=OpcUaSettings(enabled=False),
        history=HistorySettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )


# --- W1: a refusal decided against a change of the batch that was later undone ---------------------


async def _as_one_batch(store: TwinStore, writes: list[Any]) -> list[BaseException | None]:
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


def id_shorts(submodel: model.Submodel) -> dict[str, object]:
    return {
        str(element.id_short): element.value
        for element in submodel.submodel_element
        if isinstance(element, model.Property)
    }


async def test_w1_a_post_refused_because_of_an_undone_post_of_its_batch_is_tried_again(tmp_path: Path) -> None:
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        store = TwinStore(journal=repository)
        await store.create(model.Submodel(SUBMODEL, id_short="Batch", submodel_element=[model.Property("P", str, "0")]))
        await repository.set_size_limit(0)  # the database may not grow: a full disk
        errors = await _as_one_batch(
            store,
            [
                store.create_element(SUBMODEL, None, model.Property("X", str, "x" * 200_000)),  # does not fit
                store.create_element(SUBMODEL, None, model.Property("X", str, "small")),  # 409 behind the first
            ],
        )
        assert isinstance(errors[0], StorageFullError)
        # the second client's answer matches what is stored: its X was created, not refused as existing
        assert errors[1] is None, f"refused against a change that was undone: {errors[1]!r}"
        assert id_shorts(store.submodel(SUBMODEL)) == {"P": "0", "X": "small"}
        (loaded,) = await repository.load_identifiables()
    assert isinstance(loaded, model.Submodel)
    assert id_shorts(loaded) == {"P": "0", "X": "small"}


# --- W2: a model change must not give a device-bound Property a value the device did not give ---------


def environment() -> dict[str, Any]:
    return {
        "assetAdministrationShells": [],
        "submodels": [
            {
                "modelType": "Submodel",
                "id": SUBMODEL,
                "idShort": "Line",
                "submodelElements": [
                    {"modelType": "Property", "idShort": "Temperature", "valueType": "xs:float", "value": "0"},
                    {
                        "modelType": "SubmodelElementCollection",
                        "idShort": "Drive",
                        "value": [{"modelType": "Property", "idShort": "Speed", "valueType": "xs:int", "value": "0"}],
                    },
                    {"modelType": "Property", "idShort": "Ratio", "valueType": "xs:decimal", "value": "1.5"},
                ],
            }
        ],
        "conceptDescriptions": [],
    }


def mapping_document(port: int) -> dict[str, Any]:
    device = {
        "name": "plc",
        "protocol": "modbus-tcp",
        "host": "127.0.0.1",
        "port": port,
        "addressing": "zero-based",
        "timeout": 0.5,
        "retries": 0,
        "reconnect_backoff": {"initial": 0.05, "maximum": 0.2},
    }

    def point(name: str, path: str, address: int, data_type: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "device": "plc",
            "table": "holding_register",
            "address": address,
            "data_type": data_type,
            "target": {"submodel": SUBMODEL, "path": path},
            "poll_interval": 0.05,
            **extra,
        }

    return {
        "devices": [device],
        "points": [
            point("Temperature", "Temperature", 0, "float32"),
            point("Speed", "Drive.Speed", 2, "uint16", access="read-write"),
        ],
    }


@dataclass
class Plant:
    hub: Hub
    http: aiohttp.ClientSession
    device: ModbusDeviceServer
    settings: HubSettings

    def url(self, suffix: str = "") -> str:
        return f"{self.hub.rest_url}/submodels/{b64(SUBMODEL)}{suffix}"

    async def value(self, id_short_path: str) -> Any:
        async with self.http.get(self.url(f"/submodel-elements/{id_short_path}/$value")) as response:
            assert response.status == 200, await response.text()
            return (await response.json())[id_short_path.rsplit(".", 1)[-1]]


@pytest.fixture
async def plant(tmp_path: Path) -> AsyncIterator[Plant]:
    async with ModbusDeviceServer() as device:
        twin = tmp_path / "line.json"
        twin.write_text(json.dumps(environment()))
        mapping = tmp_path / "line-mapping.yaml"
        mapping.write_text(yaml.safe_dump(mapping_document(device.port)))
        device.set_registers(Table.HOLDING_REGISTER, 0, list(codecs.encode(DataType.FLOAT32, 21.5)))
        device.set_registers(Table.HOLDING_REGISTER, 2, [40])
        settings = HubSettings(
            data_dir=tmp_path / "data",
            twins=[twin],
            mappings=[mapping],
            rest=RestSettings(port=0),
            opcua=OpcUaSettings(enabled=False),
            history=HistorySettings(enabled=False),
            security=SecuritySettings(enabled=False),
        )
        async with Hub(settings) as hub, aiohttp.ClientSession() as http:
            await wait_until(
                lambda: all(
                    (state := hub.store.state(SUBMODEL, path)) is not None and state.quality is Quality.GOOD
                    for path in ("Temperature", "Drive.Speed")
                ),
                within=5.0,
                what="first reads of the device",
            )
            yield Plant(hub, http, device, settings)


async def _device_gone(plant: Plant) -> None:
    await plant.device.stop()
    await wait_until(
        lambda: all(
            (state := plant.hub.store.state(SUBMODEL, path)) is not None and state.quality is Quality.BAD
            for path in ("Temperature", "Drive.Speed")
        ),
        within=5.0,
        what="the device's values turning bad",
    )


async def test_w2_a_put_of_an_offline_sensors_property_does_not_fake_a_good_reading(plant: Plant) -> None:
    await _device_gone(plant)
    fake = {"modelType": "Property", "idShort": "Temperature", "valueType": "xs:float", "value": "999"}
    async with plant.http.put(plant.url("/submodel-elements/Temperature"), json=fake) as response:
        assert response.status == 204, await response.text()
    state = plant.hub.store.state(SUBMODEL, "Temperature")
    assert state is not None
    assert (state.value, state.quality, state.reason) == (21.5, Quality.BAD, QualityReason.NO_COMMUNICATION)
    assert await plant.value("Temperature") == 21.5


async def test_w2_a_put_of_a_collection_or_the_submodel_keeps_the_devices_values(plant: Plant) -> None:
    await _device_gone(plant)
    drive = {
        "modelType": "SubmodelElementCollection",
        "idShort": "Drive",
        "description": [{"language": "en", "text": "changed"}],
        "value": [{"modelType": "Property", "idShort": "Speed", "valueType": "xs:int", "value": "7"}],
    }
    async with plant.http.put(plant.url("/submodel-elements/Drive"), json=drive) as response:
        assert response.status == 204, await response.text()
    async with plant.http.get(plant.url()) as response:
        submodel = await response.json()
    for element in submodel["submodelElements"]:
        if element["idShort"] == "Temperature":
            element["value"] = "-5"
    async with plant.http.put(plant.url(), json=submodel) as response:
        assert response.status == 204, await response.text()
    for path, value in (("Temperature", 21.5), ("Drive.Speed", 40)):
        state = plant.hub.store.state(SUBMODEL, path)
        assert state is not None
        assert (state.value, state.quality) == (value, Quality.BAD), path
        assert await plant.value(path) == value
    assert plant.device.get_registers(Table.HOLDING_REGISTER, 2, 1) == (40,)  # no client value reached the device


async def test_w2_the_kept_value_is_what_the_document_holds_after_a_restart(plant: Plant, tmp_path: Path) -> None:
    await _device_gone(plant)
    fake = {"modelType": "Property", "idShort": "Temperature", "valueType": "xs:float", "value": "999"}
    async with plant.http.put(plant.url("/submodel-elements/Temperature"), json=fake) as response:
        assert response.status == 204, await response.text()
    async with SqliteRepository(plant.settings.data_dir / "hub.sqlite") as repository:
        stored = {item.id: item for item in await repository.load_identifiables()}
    submodel = stored[SUBMODEL]
    assert isinstance(submodel, model.Submodel)
    assert id_shorts(submodel)["Temperature"] == 21.5


# --- W3: non-finite values into xs:decimal and xs:double ---------------------------------------------


def _engine(value_type: Any) -> MappingEngine:
    document = {
        "devices": [{"name": "broker", "protocol": "mqtt", "host": "127.0.0.1", "port": 1883}],
        "points": [{"name": "P", "device": "broker", "topic": "line/p", "target": {"submodel": SUBMODEL, "path": "P"}}],
    }
    return MappingEngine(parse_mapping(document, "red.yaml"), {"P": value_type})


@pytest.mark.parametrize("value_type", [datatypes.Decimal, datatypes.Double, datatypes.Float])
@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-INF", "INF", float("nan"), float("-inf")])
def test_w3_a_non_finite_device_value_is_a_sensor_failure_for_every_floating_type(value_type: Any, raw: Any) -> None:
    change = _engine(value_type).on_sample(RawSample("broker", "P", raw, datetime(2026, 1, 1, tzinfo=UTC)))
    assert change is not None
    assert (change.value, change.quality, change.reason) == (None, Quality.BAD, QualityReason.SENSOR_FAILURE)


@pytest.mark.parametrize("body", ["NaN", "Infinity", "-INF"])
async def test_w3_a_client_cannot_write_a_non_finite_xs_decimal(plant: Plant, body: str) -> None:
    async with plant.http.patch(plant.url("/submodel-elements/Ratio/$value"), json=body) as response:
        assert response.status == 400, await response.text()
        assert "xs:decimal" in await response.text()
    assert await plant.value("Ratio") == 1.5


# --- W4: a body read while a change was journaled must not outlive the change's undoing ------------


async def test_w4_a_body_read_during_a_failing_commit_is_not_served_after_the_change_is_undone(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/submodels/{b64(SUBMODEL)}"
        submodel = {
            "modelType": "Submodel",
            "id": SUBMODEL,
            "idShort": "Cached",
            "submodelElements": [{"modelType": "Property", "idShort": "P", "valueType": "xs:string", "value": "0"}],
        }
        async with http.post(f"{hub.rest_url}/submodels", json=submodel) as response:
            assert response.status == 201, await response.text()
        repository = hub.repository
        await repository.set_size_limit(0)  # the change below cannot be stored
        holding, release = threading.Event(), threading.Event()

        def hold(database: sqlite3.Connection) -> Settle | None:
            holding.set()
            release.wait(10)
            return None

        holder = asyncio.ensure_future(repository.committer.submit(hold))
        await wait_until(holding.is_set, what="the database thread held")
        big = {"modelType": "Property", "idShort": "P", "valueType": "xs:string", "value": "x" * 200_000}
        put = asyncio.ensure_future(http.put(f"{url}/submodel-elements/P", json=big))
        await wait_until(lambda: len(repository.committer._queue) == 1, what="the PUT being journaled")
        for form in ("", "/$value", "/$metadata", "?level=core"):  # read meanwhile: the bodies are cached
            async with http.get(url + form) as response:
                assert response.status == 200
        release.set()
        await holder
        async with await put as response:
            assert response.status == 507, await response.text()
        assert hub.store.element(SUBMODEL, "P").value == "0"  # type: ignore[attr-defined]
        async with http.get(url) as response:
            body = await response.json()
        async with http.get(f"{url}/$value") as response:
            value_only = await response.json()
        async with http.get(f"{url}/submodel-elements/P") as response:
            element = await response.json()
    assert body["submodelElements"][0]["value"] == "0", "a body of an undone change was served"
    assert value_only == {"P": "0"}, "a body of an undone change was served"
    assert element["value"] == "0"


# --- W5: a list item's device binding must not slide onto another item ------------------------------


async def test_w5_deleting_an_item_before_a_bound_list_item_is_refused_not_a_silent_rebinding(tmp_path: Path) -> None:
    async with SqliteRepository(tmp_path / "hub.sqlite") as repository:
        store = TwinStore(journal=repository)
        readings = model.SubmodelElementList(
            "Readings",
            model.Property,
            value=[model.Property(None, datatypes.Int, value) for value in (1, 2, 3)],
            value_type_list_element=datatypes.Int,
        )
        await store.create(model.Submodel(SUBMODEL, id_short="Line", submodel_element=[readings]))
        store.bind(SUBMODEL, "Readings[1]", ElementBinding("device:plc", writable=False))
        with pytest.raises(ConflictError, match=r"Readings\[1\]"):
            await store.delete_element(SUBMODEL, "Readings[0]")
        now = utc_now()
        sample = ValueChanged(
            SUBMODEL, "Readings[1]", int.__new__(datatypes.Int, 99), now, Quality.GOOD, QualityReason.NONE, now
        )
        store.apply(sample)
        # the device's value went to the item it is bound to; the others kept theirs, in memory and on disk
        assert [item.value for item in readings.value] == [1, 99, 3]
        (loaded,) = await repository.load_identifiables()
    assert isinstance(loaded, model.Submodel)
    (stored,) = loaded.submodel_element
    assert isinstance(stored, model.SubmodelElementList)
    assert [item.value for item in stored.value] == [1, 2, 3]


# --- W6: xs:float is single precision -----------------------------------------------------------------


@pytest.mark.parametrize("raw", [1e300, -3.5e38, "1e39"])
def test_w6_a_device_value_beyond_single_precision_is_out_of_range_for_an_xs_float(raw: Any) -> None:
    change = _engine(datatypes.Float).on_sample(RawSample("broker", "P", raw, datetime(2026, 1, 1, tzinfo=UTC)))
    assert change is not None
    assert (change.value, change.quality, change.reason) == (None, Quality.BAD, QualityReason.OUT_OF_RANGE)
    largest = _engine(datatypes.Float).on_sample(RawSample("broker", "P", 3.4e38, datetime(2026, 1, 1, tzinfo=UTC)))
    assert largest is not None
    assert (largest.value, largest.quality) == (3.4e38, Quality.GOOD)


async def test_w6_a_client_cannot_write_beyond_single_precision_into_an_xs_float(plant: Plant) -> None:
    element = {"modelType": "Property", "idShort": "Limit", "valueType": "xs:float", "value": "1"}
    async with plant.http.post(plant.url("/submodel-elements"), json=element) as response:
        assert response.status == 201, await response.text()
    for body in (1e300, "1e39", -3.5e38):
        async with plant.http.patch(plant.url("/submodel-elements/Limit/$value"), json=body) as response:
            assert response.status == 400, await response.text()
            assert "xs:float" in await response.text()
    assert await plant.value("Limit") == 1.0


# --- an integrator's storm: mixed element changes, value writes and a full disk -----------------------


async def test_a_storm_of_mixed_changes_on_a_full_disk_leaves_memory_the_disk_and_the_bus_in_step(
    tmp_path: Path,
) -> None:
    settings = bare_settings(tmp_path)

    def prop(id_short: str, value: str) -> dict[str, Any]:
        return {"modelType": "Property", "idShort": id_short, "valueType": "xs:string", "value": value}

    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/submodels/{b64(SUBMODEL)}"
        submodel = {
            "modelType": "Submodel",
            "id": SUBMODEL,
            "idShort": "Storm",
            "submodelElements": [prop(f"E{n}", "0") for n in range(8)],
        }
        async with http.post(f"{hub.rest_url}/submodels", json=submodel) as response:
            assert response.status == 201, await response.text()
        await hub.repository.set_size_limit(0)  # small changes fit in the pages there are, big ones do not
        announced = hub.store.bus.subscribe("storm")
        statuses: list[int] = []

        async def client(number: int) -> None:
            for step in range(12):
                name = f"E{(number + step) % 8}"
                kind = (number * 7 + step) % 5
                if kind == 0:
                    request = http.put(f"{url}/submodel-elements/{name}", json=prop(name, f"{number}.{step}"))
                elif kind == 1:
                    request = http.delete(f"{url}/submodel-elements/{name}")
                elif kind == 2:
                    request = http.post(f"{url}/submodel-elements", json=prop(name, f"new {number}.{step}"))
                elif kind == 3:
                    request = http.patch(f"{url}/submodel-elements/{name}/$value", json=f"v {number}.{step}")
                else:  # does not fit on the disk
                    request = http.put(f"{url}/submodel-elements/{name}", json=prop(name, "x" * 100_000))
                async with request as response:
                    assert response.status in (200, 201, 204, 404, 409, 507), await response.text()
                    statuses.append(response.status if kind != 3 else -response.status)

        await asyncio.gather(*(client(number) for number in range(12)))
        model_changes = sum(1 for status in statuses if status in (201, 204))
        assert 507 in statuses
        await wait_until(lambda: announced.qsize() >= model_changes, what="every acknowledged model change announced")
        changes = [event for event in announced.get_nowait_all() if isinstance(event, ModelChanged)]
        assert len(changes) == model_changes, "the bus saw other changes than those acknowledged"
        async with http.get(f"{url}/$value") as response:
            before = await response.json()
    async with (
        Hub(settings) as hub,
        aiohttp.ClientSession() as http,
        http.get(f"{hub.rest_url}/submodels/{b64(SUBMODEL)}/$value") as response,
    ):
        assert await response.json() == before


# --- W7: the answer to a create is the element created, even if a later change removed it --------------


@pytest.mark.parametrize("method", ["post", "put"])
async def test_w7_a_create_followed_in_its_batch_by_a_delete_is_answered_201(tmp_path: Path, method: str) -> None:
    settings = bare_settings(tmp_path)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/submodels/{b64(SUBMODEL)}"
        submodel = {"modelType": "Submodel", "id": SUBMODEL, "idShort": "Created", "submodelElements": []}
        async with http.post(f"{hub.rest_url}/submodels", json=submodel) as response:
            assert response.status == 201, await response.text()
        announced = hub.store.bus.subscribe("created")
        element = {"modelType": "Property", "idShort": "X", "valueType": "xs:string", "value": "mine"}
        lock = hub.store.change_lock(SUBMODEL)
        await lock.acquire()
        try:
            create = asyncio.ensure_future(
                http.post(f"{url}/submodel-elements", json=element)
                if method == "post"
                else http.put(f"{url}/submodel-elements/X", json=element)
            )
            await wait_until(lambda: len(hub.store._element_queues.get(SUBMODEL, ())) == 1, what="the create queued")
            delete = asyncio.ensure_future(http.delete(f"{url}/submodel-elements/X"))
            await wait_until(lambda: len(hub.store._element_queues.get(SUBMODEL, ())) == 2, what="the delete queued")
        finally:
            lock.release()
        async with await create as response:
            created = (response.status, await response.json())
        async with await delete as response:
            deleted = response.status
        await wait_until(lambda: announced.qsize() >= 2, what="both announced")
        kinds = [event.kind.value for event in announced.get_nowait_all() if isinstance(event, ModelChanged)]
    assert deleted == 204
    assert kinds == ["created", "deleted"]
    # the creator is told what it created (and stored): 201 with its element, not 404
    assert created[0] == 201
    assert {key: created[1][key] for key in element} == element


# --- W8: AASd-120, no idShort inside a SubmodelElementList --------------------------------------------


async def test_w8_an_id_short_inside_a_list_is_refused_so_memory_and_disk_agree(tmp_path: Path) -> None:
    settings = bare_settings(tmp_path)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/submodels/{b64(SUBMODEL)}"
        item = {"modelType": "Property", "valueType": "xs:int", "value": "1"}
        submodel = {
            "modelType": "Submodel",
            "id": SUBMODEL,
            "idShort": "Lists",
            "submodelElements": [
                {
                    "modelType": "SubmodelElementList",
                    "idShort": "L",
                    "typeValueListElement": "Property",
                    "valueTypeListElement": "xs:int",
                    "value": [item],
                }
            ],
        }
        async with http.post(f"{hub.rest_url}/submodels", json=submodel) as response:
            assert response.status == 201, await response.text()
        named = {**item, "idShort": "X", "value": "5"}
        async with http.put(f"{url}/submodel-elements/L[0]", json=named) as response:
            assert response.status == 400, await response.text()
            assert "AASd-120" in await response.text()
        async with http.post(f"{url}/submodel-elements/L", json=named) as response:
            assert response.status == 400, await response.text()
            assert "AASd-120" in await response.text()
        async with http.put(f"{url}/submodel-elements/L[0]", json={**item, "value": "7"}) as response:
            assert response.status == 204, await response.text()
        async with http.get(f"{url}/submodel-elements/L") as response:
            before = await response.json()
    async with (
        Hub(settings) as hub,
        aiohttp.ClientSession() as http,
        http.get(f"{hub.rest_url}/submodels/{b64(SUBMODEL)}/submodel-elements/L") as response,
    ):
        after = await response.json()
    assert before == after
    assert [entry.get("idShort") for entry in after["value"]] == [None]
    assert after["value"][0]["value"] == "7"


# --- OPC UA writes racing a batch of REST element changes of the same submodel -------------------------


async def test_opc_ua_writes_racing_rest_element_batches_are_answered_as_stored(tmp_path: Path) -> None:
    operator = UserSettings(name="olga", password=SecretStr("operator-secret"), role=Role.OPERATOR)
    settings = bare_settings(tmp_path).model_copy(
        update={"opcua": OpcUaSettings(port=0, security_policies=[SecurityPolicyName.NONE], users=[operator])}
    )
    elements = [{"modelType": "Property", "idShort": f"P{n}", "valueType": "xs:int", "value": "0"} for n in range(4)]
    submodel = {"modelType": "Submodel", "id": SUBMODEL, "idShort": "Race", "submodelElements": elements}
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        async with http.post(f"{hub.rest_url}/submodels", json=submodel) as response:
            assert response.status == 201, await response.text()
        url = f"{hub.rest_url}/submodels/{b64(SUBMODEL)}/submodel-elements"
        assert hub.opcua_url is not None
        client = Client(hub.opcua_url, timeout=5)
        client.set_user(operator.name)
        client.set_password(operator.password.get_secret_value())
        async with client:
            namespace = await client.get_namespace_index(settings.opcua.namespace_uri)

            async def opc_ua_writer() -> None:
                for value in range(1, 31):
                    node = client.get_node(ua.NodeId(cast(Any, f"{SUBMODEL}/P0"), cast(Any, namespace)))
                    await node.write_value(ua.DataValue(ua.Variant(value, ua.VariantType.Int32)))

            async def rest_client(number: int) -> None:
                for value in range(1, 11):
                    name = f"P{1 + number % 3}"
                    body = {"modelType": "Property", "idShort": name, "valueType": "xs:int", "value": str(value)}
                    async with http.put(f"{url}/{name}", json=body) as response:
                        assert response.status == 204, await response.text()

            await asyncio.gather(opc_ua_writer(), *(rest_client(number) for number in range(6)))
            node = client.get_node(ua.NodeId(cast(Any, f"{SUBMODEL}/P0"), cast(Any, namespace)))
            assert await node.read_value() == 30
        async with http.get(f"{hub.rest_url}/submodels/{b64(SUBMODEL)}/$value") as response:
            before = await response.json()
    assert before == {"P0": 30, "P1": 10, "P2": 10, "P3": 10}
    async with (
        Hub(settings) as hub,
        aiohttp.ClientSession() as http,
        http.get(f"{hub.rest_url}/submodels/{b64(SUBMODEL)}/$value") as response,
    ):
        assert await response.json() == before

"""History of mapped values: recorded from the change bus, read over REST and OPC UA HistoryRead, linked by
IDTA 02008 Time Series submodels. A real SQLite file, a real aiohttp server and a real asyncua server on loopback."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from asyncua import ua
from asyncua.client.client import Client as OpcUaClient
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from basyx.aas import model
from basyx.aas.adapter.json import StrictAASFromJsonDecoder
from pydantic import SecretStr

from aas_server.api.app import create_app
from aas_server.api.serialization import decode_identifier, encode_identifier
from aas_server.config import HistorySettings, HubSettings, OpcUaSettings, Role, UserSettings
from aas_server.exchange import environment_json, read_package
from aas_server.model import paths
from aas_server.model.events import Quality, QualityReason, ValueChanged, utc_now
from aas_server.model.timeseries import (
    ENDPOINT_SEMANTIC_ID,
    LINKED_SEGMENT_SEMANTIC_ID,
    TIME_SERIES_SEMANTIC_ID,
    UTC_TIME_SEMANTIC_ID,
    time_series_submodel_id,
)
from aas_server.opcua import OpcUaProjection, node_id_for
from aas_server.opcua_common.status import status_code_for
from aas_server.runtime.history import HistoryService, install_time_series, start_history
from aas_server.store.history import Downsampler, parse_interval
from aas_server.store.twin_store import ElementBinding, TwinStore
from tests.support import CLIENT_URI, ClientCertificate, eventually, trust_client_certificate

RestClient = TestClient[web.Request, web.Application]

API = "/api/v3.0"
SUBMODEL_ID = "https://example.com/ids/sm/line1/operational"
SHELL_ID = "https://example.com/ids/aas/filler1"
VIEWER = UserSettings(name="victor", password=SecretStr("viewer-secret"), role=Role.READ_ONLY)
OPERATOR = UserSettings(name="olga", password=SecretStr("operator-secret"), role=Role.OPERATOR)


class _Device:
    """A set-point's device: accepts every write (the store journals and publishes it)."""

    def __init__(self) -> None:
        self.written: list[Any] = []

    async def __call__(self, value: Any) -> None:
        self.written.append(value)


def _semantic_id(iri: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, iri),))


def _store() -> TwinStore:
    submodel = model.Submodel(
        SUBMODEL_ID,
        id_short="Operational",
        submodel_element=[
            model.Property("Temperature", float, 20.0, semantic_id=_semantic_id("0173-1#02-AAV232#002")),
            model.Property("Setpoint", float, 5.0),
            model.Property("Running", bool, False),
            model.Property("Count", model.datatypes.Int, 0),
            model.Property("Label", str, "line 1"),
            model.SubmodelElementCollection("Motor", value=[model.Property("Speed", float, 0.0)]),
        ],
    )
    shell = model.AssetAdministrationShell(
        model.AssetInformation(global_asset_id="https://example.com/assets/filler1"),
        SHELL_ID,
        id_short="Filler1",
        submodel={model.ModelReference.from_referable(submodel)},
    )
    store = TwinStore()
    store.add_all([submodel, shell])
    store.bind(SUBMODEL_ID, "Temperature", ElementBinding("device:plc", writable=False))
    store.bind(SUBMODEL_ID, "Setpoint", ElementBinding("device:plc", writable=True), _Device())
    store.bind(SUBMODEL_ID, "Running", ElementBinding("device:plc", writable=False))
    store.bind(SUBMODEL_ID, "Count", ElementBinding("device:plc", writable=False))
    store.bind(SUBMODEL_ID, "Motor.Speed", ElementBinding("device:plc", writable=False))
    return store


@dataclass
class _Hub:
    store: TwinStore
    service: HistoryService
    client: RestClient


@asynccontextmanager
async def _running(data_dir: Path, **history: Any) -> AsyncIterator[_Hub]:
    """Store, history service and the REST API on a loopback socket, as the hub wires them."""
    settings = HubSettings(data_dir=data_dir, history=HistorySettings(**history))
    store = _store()
    async with AsyncExitStack() as stack:
        service = await start_history(stack, settings, store, lambda s, p: store.binding(s, p) is not None)
        assert service is not None
        client: RestClient = TestClient(TestServer(create_app(store, history=service.source)))
        await stack.enter_async_context(client)
        yield _Hub(store, service, client)


def _history_url(path: str, submodel_id: str = SUBMODEL_ID) -> str:
    return f"{API}/submodels/{encode_identifier(submodel_id)}/submodel-elements/{path}/history"


def _z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _get(client: RestClient, url: str, **query: Any) -> Any:
    response = await client.get(url, params={key: str(value) for key, value in query.items()})
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def _all_pages(client: RestClient, url: str, **query: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        body = await _get(client, url, **query)
        items.extend(body["result"])
        cursor = body["paging_metadata"].get("cursor")
        if cursor is None:
            return items
        query["cursor"] = cursor


def _apply(store: TwinStore, path: str, value: Any, moment: datetime, quality: Quality = Quality.GOOD) -> None:
    reason = QualityReason.NO_COMMUNICATION if quality is Quality.BAD else QualityReason.NONE
    assert store.apply(ValueChanged(SUBMODEL_ID, path, value, moment, quality, reason, origin="device:plc"))


def _base() -> datetime:
    return utc_now().replace(microsecond=0) - timedelta(hours=1)


def _expected(path_value: list[tuple[Any, datetime, Quality]]) -> list[tuple[Any, str, str]]:
    return [(value, _z(moment), quality.value) for value, moment, quality in path_value]


def _seen(items: list[dict[str, Any]]) -> list[tuple[Any, str, str]]:
    return [(item["value"], item["timestamp"], item["quality"]) for item in items]


# --- recording and REST --------------------------------------------------------------------------


async def test_history_returns_what_was_written_in_time_order_and_after_a_restart(tmp_path: Path) -> None:
    base = _base()
    written: list[tuple[Any, datetime, Quality]] = []
    async with _running(tmp_path) as hub:
        for index, value in enumerate([21.5, 22.25, 23.0]):
            moment = base + timedelta(seconds=index, microseconds=123_456 * index)
            _apply(hub.store, "Temperature", value, moment)
            written.append((value, moment, Quality.GOOD))
        outage = base + timedelta(seconds=10)
        _apply(hub.store, "Temperature", None, outage, Quality.BAD)
        written.append((23.0, outage, Quality.BAD))
        _apply(hub.store, "Temperature", 19.5, base + timedelta(seconds=11))
        written.append((19.5, base + timedelta(seconds=11), Quality.GOOD))
        _apply(hub.store, "Label", "unmapped", base)

        items = await _all_pages(hub.client, _history_url("Temperature"))
        assert _seen(items) == _expected(written)
        assert [item["qualityReason"] for item in items] == ["none", "none", "none", "no_communication", "none"]
        assert all(item["serverTimestamp"].endswith("Z") for item in items)

        response = await hub.client.patch(
            f"{API}/submodels/{encode_identifier(SUBMODEL_ID)}/submodel-elements/Setpoint/$value", json=42.5
        )
        assert response.status == 204, await response.text()
        setpoint = await _get(hub.client, _history_url("Setpoint"))
        assert [item["value"] for item in setpoint["result"]] == [42.5]
        assert setpoint["result"][0]["quality"] == "good"

        window = await _get(
            hub.client, _history_url("Temperature"), **{"from": _z(base + timedelta(seconds=1)), "to": _z(outage)}
        )
        assert _seen(window["result"]) == _expected(written[1:3])

    async with _running(tmp_path) as restarted:
        assert _seen(await _all_pages(restarted.client, _history_url("Temperature"))) == _expected(written)
        assert [item["value"] for item in await _all_pages(restarted.client, _history_url("Setpoint"))] == [42.5]
        assert await restarted.service.database.integrity_check() == "ok"


async def test_values_of_each_type_come_back_with_their_type(tmp_path: Path) -> None:
    base = _base()
    async with _running(tmp_path) as hub:
        _apply(hub.store, "Running", True, base)
        _apply(hub.store, "Running", False, base + timedelta(seconds=1))
        _apply(hub.store, "Count", 2**31 - 1, base)
        _apply(hub.store, "Motor.Speed", 1450.5, base)
        assert [item["value"] for item in (await _get(hub.client, _history_url("Running")))["result"]] == [True, False]
        assert [item["value"] for item in (await _get(hub.client, _history_url("Count")))["result"]] == [2**31 - 1]
        assert [item["value"] for item in (await _get(hub.client, _history_url("Motor.Speed")))["result"]] == [1450.5]
        shell_base = f"{API}/shells/{encode_identifier(SHELL_ID)}/submodels/{encode_identifier(SUBMODEL_ID)}"
        body = await _get(hub.client, f"{shell_base}/submodel-elements/Running/history")
        assert [item["value"] for item in body["result"]] == [True, False]
        v31 = f"/api/v3.1/submodels/{encode_identifier(SUBMODEL_ID)}/submodel-elements/Count/history"
        assert [item["value"] for item in (await _get(hub.client, v31))["result"]] == [2**31 - 1]


async def test_paging_through_cursors_returns_each_sample_once(tmp_path: Path) -> None:
    base = _base()
    async with _running(tmp_path) as hub:
        written = []
        for index in range(230):
            moment = base + timedelta(seconds=index // 5)
            _apply(hub.store, "Motor.Speed", float(index), moment)
            written.append((float(index), moment, Quality.GOOD))
        pages = 0
        query: dict[str, Any] = {"limit": 40}
        items: list[dict[str, Any]] = []
        while True:
            body = await _get(hub.client, _history_url("Motor.Speed"), **query)
            pages += 1
            assert len(body["result"]) <= 40
            items.extend(body["result"])
            if "cursor" not in body["paging_metadata"]:
                break
            query["cursor"] = body["paging_metadata"]["cursor"]
        assert pages == 6
        assert _seen(items) == _expected(written)

        ranged = await _all_pages(
            hub.client,
            _history_url("Motor.Speed"),
            limit=7,
            **{"from": _z(base + timedelta(seconds=10)), "to": _z(base + timedelta(seconds=20))},
        )
        assert _seen(ranged) == _expected(written[50:100])


async def test_aggregates_per_interval_match_values_computed_here(tmp_path: Path) -> None:
    base = _base()
    samples: list[tuple[float, datetime, Quality]] = []
    async with _running(tmp_path) as hub:
        for index in range(20):
            moment = base + timedelta(seconds=3 * index, milliseconds=250 * (index % 3))
            value = round(math.sin(index) * 50 + index, 3)
            if index == 9:
                _apply(hub.store, "Temperature", None, moment, Quality.BAD)
                samples.append((math.nan, moment, Quality.BAD))
            else:
                _apply(hub.store, "Temperature", value, moment)
                samples.append((value, moment, Quality.GOOD))
        start, end, width = base + timedelta(seconds=1), base + timedelta(seconds=50), timedelta(seconds=7)

        body = await _get(
            hub.client,
            _history_url("Temperature"),
            interval="7",
            aggregate="min,max,avg,count,first,last",
            **{"from": _z(start), "to": _z(end)},
        )
        rows = body["result"]
        assert len(rows) == 7
        for number, row in enumerate(rows):
            low = start + width * number
            high = min(low + width, end)
            assert (row["from"], row["to"]) == (_z(low), _z(high))
            inside = [value for value, moment, quality in samples if low <= moment < high and quality is Quality.GOOD]
            assert row["count"] == len(inside)
            if inside:
                assert row["min"] == min(inside)
                assert row["max"] == max(inside)
                assert row["avg"] == pytest.approx(sum(inside) / len(inside))
                assert row["first"] == inside[0]
                assert row["last"] == inside[-1]
            else:
                assert row["min"] is None
                assert row["avg"] is None
                assert row["first"] is None

        iso = await _get(hub.client, _history_url("Temperature"), interval="PT7S", **{"from": _z(start), "to": _z(end)})
        assert [set(row) for row in iso["result"]] == [{"from", "to", "min", "max", "avg", "count"}] * 7
        assert [row["avg"] for row in iso["result"]] == [row["avg"] for row in rows]

        paged = await _all_pages(
            hub.client,
            _history_url("Temperature"),
            interval="PT7S",
            aggregate="count",
            limit=3,
            **{"from": _z(start), "to": _z(end)},
        )
        assert [row["count"] for row in paged] == [row["count"] for row in rows]

        booleans = [True, False, True, False, True]
        for index, running in enumerate(booleans):
            _apply(hub.store, "Running", running, base + timedelta(seconds=index))
        fraction = await _get(
            hub.client,
            _history_url("Running"),
            interval="60",
            aggregate="avg,max",
            **{"from": _z(base), "to": _z(base + timedelta(seconds=60))},
        )
        assert fraction["result"][0]["avg"] == pytest.approx(0.6)
        assert fraction["result"][0]["max"] is True


async def test_bad_requests_are_answered_with_result_messages(tmp_path: Path) -> None:
    async with _running(tmp_path) as hub:
        cases: list[tuple[str, dict[str, str], int, str]] = [
            (_history_url("Temperature"), {"from": "yesterday"}, 400, "from"),
            (_history_url("Temperature"), {"to": "2025-03-01T12:00:00"}, 400, "time zone"),
            (_history_url("Temperature"), {"to": "9999-12-31T23:00:00-05:00"}, 400, "0001..9999"),
            (_history_url("Temperature"), {"from": "0001-01-01T00:00:00+05:00"}, 400, "0001..9999"),
            (_history_url("Temperature"), {"from": "99999-01-01T00:00:00Z"}, 400, "RFC 3339"),
            (_history_url("Temperature"), {"from": "2025-03-02T00:00:00Z", "to": "2025-03-01T00:00:00Z"}, 400, "to"),
            (_history_url("Temperature"), {"interval": "0"}, 400, "more than 0"),
            (_history_url("Temperature"), {"interval": "-5"}, 400, "more than 0"),
            (_history_url("Temperature"), {"interval": "P1M"}, 400, "ISO 8601"),
            (_history_url("Temperature"), {"interval": "60", "aggregate": "median"}, 400, "median"),
            (_history_url("Temperature"), {"aggregate": "min"}, 400, "interval"),
            (_history_url("Temperature"), {"cursor": encode_identifier("not-a-cursor")}, 400, "cursor"),
            (_history_url("Temperature"), {"limit": "0"}, 400, "limit"),
            (_history_url("Label"), {}, 404, "only device-fed"),
            (_history_url("Missing"), {}, 404, "Missing"),
            (_history_url("Temperature", "urn:example:no-such-submodel"), {}, 404, "no-such-submodel"),
        ]
        for url, query, status, text in cases:
            response = await hub.client.get(url, params=query)
            assert response.status == status, (url, query, await response.text())
            message = (await response.json())["messages"][0]
            assert message["messageType"] == "Error"
            assert text in message["text"], (query, message)


async def test_history_disabled_records_nothing_and_serves_no_route(tmp_path: Path) -> None:
    settings = HubSettings(data_dir=tmp_path, history=HistorySettings(enabled=False))
    store = _store()
    async with AsyncExitStack() as stack:
        assert await start_history(stack, settings, store, lambda s, p: True) is None
        client: RestClient = TestClient(TestServer(create_app(store)))
        await stack.enter_async_context(client)
        response = await client.get(_history_url("Temperature"))
        assert response.status == 404
    assert not settings.history_path.exists()


def test_intervals_are_seconds_or_iso_durations() -> None:
    assert parse_interval("90") == timedelta(seconds=90)
    assert parse_interval("0.25") == timedelta(milliseconds=250)
    assert parse_interval("PT1M30S") == timedelta(seconds=90)
    assert parse_interval("P1DT1H") == timedelta(hours=25)
    assert parse_interval("P2W") == timedelta(days=14)


# --- retention and downsampling --------------------------------------------------------------------


async def test_retention_purges_old_samples_now_and_at_start(tmp_path: Path) -> None:
    now = utc_now()
    async with _running(tmp_path, retention=10 * 86_400.0) as hub:
        for index in range(5):
            _apply(hub.store, "Temperature", float(index), now - timedelta(hours=3, minutes=index))
        _apply(hub.store, "Temperature", 99.0, now - timedelta(minutes=5))
        assert len(await _all_pages(hub.client, _history_url("Temperature"))) == 6
        hub.service.settings = hub.service.settings.model_copy(update={"retention": 7200.0})
        assert await hub.service.purge() == 5
        assert [item["value"] for item in await _all_pages(hub.client, _history_url("Temperature"))] == [99.0]
        _apply(hub.store, "Count", 1, now - timedelta(hours=2, minutes=1))
        _apply(hub.store, "Count", 2, now - timedelta(minutes=1))

    async with _running(tmp_path, retention=3600.0) as restarted:
        await eventually(
            lambda: _get(restarted.client, _history_url("Count")),
            lambda body: [item["value"] for item in body["result"]] == [2],
            within=3.0,
        )


async def test_downsampling_keeps_the_last_value_of_each_interval_and_every_quality_change(tmp_path: Path) -> None:
    base = _base()
    url = _history_url("Temperature")
    async with _running(tmp_path, minimum_interval=0.3) as hub:
        for index in range(1, 6):
            _apply(hub.store, "Temperature", float(index), base + timedelta(milliseconds=10 * index))
        assert (await _get(hub.client, url))["result"] == []
        await eventually(lambda: _get(hub.client, url), lambda body: len(body["result"]) == 1, within=3.0)
        first = (await _get(hub.client, url))["result"]
        assert _seen(first) == [(5.0, _z(base + timedelta(milliseconds=50)), "good")]

        _apply(hub.store, "Temperature", None, base + timedelta(seconds=1), Quality.BAD)
        _apply(hub.store, "Temperature", 6.0, base + timedelta(seconds=2))
        assert [item["quality"] for item in (await _get(hub.client, url))["result"]] == ["good", "bad", "good"]

        for index in range(7, 10):
            _apply(hub.store, "Temperature", float(index), base + timedelta(seconds=3, milliseconds=index))
        body = await eventually(lambda: _get(hub.client, url), lambda body: len(body["result"]) == 4, within=3.0)
        assert [item["value"] for item in body["result"]] == [5.0, 5.0, 6.0, 9.0]


def test_downsampler_holds_one_sample_per_interval() -> None:
    sampler = Downsampler(1.0)
    moment = datetime(2025, 1, 1, tzinfo=UTC)

    def change(value: float, quality: Quality = Quality.GOOD) -> ValueChanged:
        return ValueChanged(SUBMODEL_ID, "Temperature", value, moment, quality)

    assert sampler.offer(change(1.0), now=10.0) == []
    assert sampler.offer(change(2.0), now=10.5) == []
    assert sampler.next_due() == 11.0
    assert sampler.due(10.9) == []
    assert [item.value for item in sampler.due(11.0)] == [2.0]
    assert sampler.offer(change(3.0), now=12.0) == []
    assert [item.value for item in sampler.offer(change(4.0), now=13.5)] == [3.0]
    assert [item.value for item in sampler.offer(change(4.0, Quality.BAD), now=13.6)] == [4.0, 4.0]
    assert [item.value for item in sampler.offer(change(5.0), now=13.7)] == [5.0]
    assert sampler.flush_all() == []


# --- OPC UA HistoryRead ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, opcua_client_certificate: ClientCertificate) -> Path:
    directory = tmp_path_factory.mktemp("history-hub")
    trust_client_certificate(directory, opcua_client_certificate)
    return directory


@asynccontextmanager
async def _opcua_session(url: str, certificate: ClientCertificate) -> AsyncIterator[OpcUaClient]:
    client = OpcUaClient(url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certificate.certificate),
        str(certificate.private_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user(VIEWER.name)
    client.set_password(VIEWER.password.get_secret_value())
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


def _node_id(identifier: int | str, namespace_index: int = 0) -> ua.NodeId:
    return ua.NodeId(cast(Any, identifier), cast(Any, namespace_index))


def _plain(data_value: ua.DataValue) -> Any:
    return None if data_value.Value is None else data_value.Value.Value


def _status(data_value: ua.DataValue) -> int:
    return 0 if data_value.StatusCode is None else int(data_value.StatusCode.value)


async def _read_raw(
    client: OpcUaClient, node_id: ua.NodeId, start: datetime, end: datetime, per_call: int
) -> tuple[list[ua.DataValue], int]:
    """Every raw value in ``[start, end)``, ``per_call`` per HistoryRead, following continuation points."""
    details = ua.ReadRawModifiedDetails(IsReadModified=False, StartTime=start, EndTime=end, NumValuesPerNode=per_call)
    values: list[ua.DataValue] = []
    continuation: bytes | None = None
    calls = 0
    while True:
        read = ua.HistoryReadValueId(NodeId=node_id, ContinuationPoint=continuation)
        parameters = ua.HistoryReadParameters(
            HistoryReadDetails=details,
            TimestampsToReturn=ua.TimestampsToReturn.Both,
            ReleaseContinuationPoints=False,
            NodesToRead=[read],
        )
        (result,) = await client.uaclient.history_read(parameters)
        calls += 1
        assert result.StatusCode is not None
        assert result.StatusCode.is_good(), result.StatusCode
        values.extend(cast(ua.HistoryData, result.HistoryData).DataValues)
        continuation = result.ContinuationPoint
        if not continuation:
            return values, calls


async def test_opcua_history_read_agrees_with_rest(
    tmp_path: Path, data_dir: Path, opcua_client_certificate: ClientCertificate
) -> None:
    base = _base()
    async with _running(tmp_path) as hub:
        for index in range(12):
            moment = base + timedelta(seconds=index, microseconds=1000 * index)
            if index == 5:
                _apply(hub.store, "Temperature", None, moment, Quality.BAD)
            else:
                _apply(hub.store, "Temperature", 20.0 + index / 4, moment)
        settings = OpcUaSettings(port=0, users=[VIEWER, OPERATOR])
        async with (
            OpcUaProjection(hub.store, settings, data_dir, history=hub.service.source) as projection,
            _opcua_session(projection.endpoint_url, opcua_client_certificate) as client,
        ):
            namespace = projection.namespace_index
            temperature = client.get_node(_node_id(node_id_for(SUBMODEL_ID, "Temperature"), namespace))
            label = client.get_node(_node_id(node_id_for(SUBMODEL_ID, "Label"), namespace))
            level = await temperature.read_attribute(AttributeIds.AccessLevel)
            assert level.Value is not None
            assert level.Value.Value & ua.AccessLevel.HistoryRead.mask
            assert _plain(await temperature.read_attribute(AttributeIds.Historizing)) is True
            assert _plain(await label.read_attribute(AttributeIds.Historizing)) is False

            start, end = base + timedelta(seconds=2), base + timedelta(seconds=10)
            rest = (await _get(hub.client, _history_url("Temperature"), **{"from": _z(start), "to": _z(end)}))["result"]
            assert len(rest) == 8
            raw = await temperature.read_raw_history(start, end, return_bounds=False)
            paged, calls = await _read_raw(client, temperature.nodeid, start, end, per_call=3)
            assert calls == 3
            for values in (raw, paged):
                assert [_z(cast(datetime, value.SourceTimestamp)) for value in values] == [
                    item["timestamp"] for item in rest
                ]
                assert [_z(cast(datetime, value.ServerTimestamp)) for value in values] == [
                    item["serverTimestamp"] for item in rest
                ]
                assert [_status(value) for value in values] == [
                    status_code_for(Quality(item["quality"]), QualityReason(item["qualityReason"])) for item in rest
                ]
                assert [_plain(value) for value in values] == [
                    item["value"] if item["quality"] != "bad" else None for item in rest
                ]

            backwards = await temperature.read_raw_history(end, start, return_bounds=False)
            assert [value.SourceTimestamp for value in backwards] == [value.SourceTimestamp for value in raw][::-1]

            (unrecorded,) = await client.uaclient.history_read(
                ua.HistoryReadParameters(
                    HistoryReadDetails=ua.ReadRawModifiedDetails(StartTime=start, EndTime=end),
                    ReleaseContinuationPoints=False,
                    NodesToRead=[ua.HistoryReadValueId(NodeId=label.nodeid)],
                )
            )
            assert unrecorded.StatusCode is not None
            assert unrecorded.StatusCode.value == StatusCodes.BadHistoryOperationUnsupported

            aggregates = await _get(
                hub.client,
                _history_url("Temperature"),
                interval="PT4S",
                aggregate="min,avg,count",
                **{"from": _z(base), "to": _z(base + timedelta(seconds=12))},
            )
            processed = {}
            for function in (
                ObjectIds.AggregateFunction_Minimum,
                ObjectIds.AggregateFunction_Average,
                ObjectIds.AggregateFunction_Count,
            ):
                (result,) = await client.uaclient.history_read(
                    ua.HistoryReadParameters(
                        HistoryReadDetails=ua.ReadProcessedDetails(
                            StartTime=base,
                            EndTime=base + timedelta(seconds=12),
                            ProcessingInterval=4000.0,
                            AggregateType=[_node_id(function)],
                        ),
                        ReleaseContinuationPoints=False,
                        NodesToRead=[ua.HistoryReadValueId(NodeId=temperature.nodeid)],
                    )
                )
                assert result.StatusCode is not None
                assert result.StatusCode.is_good()
                processed[function] = cast(ua.HistoryData, result.HistoryData).DataValues
            rows = aggregates["result"]
            assert [_plain(value) for value in processed[ObjectIds.AggregateFunction_Minimum]] == [
                row["min"] for row in rows
            ]
            assert [_plain(value) for value in processed[ObjectIds.AggregateFunction_Average]] == [
                pytest.approx(row["avg"]) for row in rows
            ]
            assert [_plain(value) for value in processed[ObjectIds.AggregateFunction_Count]] == [
                row["count"] for row in rows
            ]
            assert [
                _z(cast(datetime, value.SourceTimestamp)) for value in processed[ObjectIds.AggregateFunction_Count]
            ] == [row["from"] for row in rows]

            _apply(hub.store, "Motor.Speed", 1480.0, base)
            speed = client.get_node(_node_id(node_id_for(SUBMODEL_ID, "Motor.Speed"), namespace))
            for number in (1, 2):
                changed = copy.deepcopy(hub.store.submodel(SUBMODEL_ID))
                motor = paths.resolve(changed, "Motor")
                motor.semantic_id = _semantic_id(f"https://example.com/semantics/Motor/{number}")
                if number == 1:
                    await hub.store.replace(changed)
                else:
                    changed.submodel_element.remove(motor)
                    await hub.store.replace_element(SUBMODEL_ID, "Motor", motor)
                await eventually(
                    lambda: speed.read_attribute(AttributeIds.Historizing),
                    lambda value: _plain(value) is True,
                    within=3.0,
                )
                level = await speed.read_attribute(AttributeIds.AccessLevel)
                assert _plain(level) & ua.AccessLevel.HistoryRead.mask
                history = await speed.read_raw_history(base, base + timedelta(seconds=1), return_bounds=False)
                assert [_plain(value) for value in history] == [1480.0]


# --- Time Series submodels -----------------------------------------------------------------------


def _template_semantic_ids(reference: Path) -> set[str]:
    document = json.loads(
        (reference / "idta-templates" / "IDTA_02008-1-1_Template_TimeSeriesData.json").read_text(encoding="utf-8")
    )
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            semantic_id = node.get("semanticId")
            if isinstance(semantic_id, dict):
                found.update(key["value"].strip() for key in semantic_id["keys"])
            for child in node.values():
                visit(child)
        elif isinstance(node, list):
            for child in node:
                visit(child)

    visit(document["submodels"])
    return found


async def test_time_series_submodel_is_valid_aas_and_links_to_the_history(tmp_path: Path, reference: Path) -> None:
    base = _base()
    async with _running(tmp_path) as hub:
        _apply(hub.store, "Motor.Speed", 1200.0, base)
        api_base = str(hub.client.make_url(API))
        placements = hub.service.time_series(api_base)
        assert [placement.shell_id for placement in placements] == [SHELL_ID]
        submodel = placements[0].submodel
        assert submodel.id == time_series_submodel_id(SHELL_ID)
        assert submodel.semantic_id is not None
        assert submodel.semantic_id.key[0].value == TIME_SERIES_SEMANTIC_ID

        document = json.dumps(environment_json([submodel])).encode()
        imported = read_package(document, "time-series.json", strict=True)
        assert imported.report.issues == []
        decoded = json.loads(document, cls=StrictAASFromJsonDecoder)
        assert [item.id for item in decoded["submodels"]] == [submodel.id]

        template = _template_semantic_ids(reference)
        variables = {"Temperature", "Setpoint", "Running", "Count", "Motor_Speed"}
        record = paths.resolve(submodel, "Metadata.Record")
        assert isinstance(record, model.SubmodelElementCollection)
        assert {str(item.id_short) for item in record.value} == {"Time", *variables}
        for path, element in paths.walk(submodel):
            if element.semantic_id is None or path.startswith("Metadata.Record."):
                continue
            assert element.semantic_id.key[0].value in template, path
        time = paths.resolve(submodel, "Metadata.Record.Time")
        assert time.semantic_id is not None
        assert time.semantic_id.key[0].value == UTC_TIME_SEMANTIC_ID

        segment = paths.resolve(submodel, "Segments.Motor_Speed")
        assert segment.semantic_id is not None
        assert segment.semantic_id.key[0].value == LINKED_SEGMENT_SEMANTIC_ID
        endpoint = paths.resolve(submodel, "Segments.Motor_Speed.Endpoint")
        assert isinstance(endpoint, model.Property)
        assert endpoint.semantic_id is not None
        assert endpoint.semantic_id.key[0].value == ENDPOINT_SEMANTIC_ID
        response = await hub.client.session.get(str(endpoint.value))
        assert response.status == 200, await response.text()
        assert [item["value"] for item in (await response.json())["result"]] == [1200.0]

        await install_time_series(hub.store, placements)
        await install_time_series(hub.store, hub.service.time_series(api_base))
        shell = hub.store.shell(SHELL_ID)
        assert sum(1 for reference_ in shell.submodel if reference_.key[-1].value == submodel.id) == 1
        listed = await _get(hub.client, f"{API}/submodels/{encode_identifier(submodel.id)}")
        assert listed["idShort"] == "TimeSeries"
        assert decode_identifier(encode_identifier(submodel.id)) == submodel.id

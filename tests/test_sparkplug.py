"""Sparkplug B, the fourth southbound protocol, against a real Mosquitto broker and a simulated edge node.

The edge node (``tests/sparkplug_node.py``) is a paho client that builds Sparkplug 3.0 payloads with
the Tahu protobuf classes; the hub's connector is a host application of the same broker. The tests
check what a user notices: values and their timestamps from births and data (by name and by alias),
values turning bad when a node or device dies, a rebirth request on a sequence gap, set-points going
out as NCMD/DCMD with the birth's datatype, and bad input counted and logged once without stopping
the connector. One test runs the whole hub: REST values, their quality and source timestamp, and a
PATCH that reaches the edge node.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from aas_server.config import HubSettings, OpcUaSettings, RestSettings, SecuritySettings
from aas_server.connectors.sparkplug import SparkplugConnector
from aas_server.errors import DeviceError, NotWritableError, TypeMismatchError
from aas_server.mapping.aid import mapping_from_aid, mapping_to_aid
from aas_server.mapping.protocols.sparkplug import SparkplugDevice, SparkplugPoint
from aas_server.mapping.schema import parse_mapping
from aas_server.model.events import Quality, QualityReason, RawSample, RawWrite
from aas_server.runtime.hub import Hub
from tests.mqtt_broker import MosquittoBroker, MqttListener, publish
from tests.sparkplug_node import (
    BOOLEAN,
    DATASET,
    DOUBLE,
    INT16,
    INT32,
    STRING,
    UINT64,
    Command,
    EdgeNodeSimulator,
    Metric,
)
from tests.support import eventually, wait_until

DEVICE = "plant-broker"
LOGGER = "aas_server.connectors.sparkplug"
SUBMODEL = "urn:aas-server:tests:sparkplug:sm:line"
T1 = datetime(2024, 5, 1, 12, 0, 0, 125000, tzinfo=UTC)
T2 = datetime(2024, 5, 1, 12, 0, 1, 250000, tzinfo=UTC)
T3 = datetime(2024, 5, 1, 12, 0, 2, 500000, tzinfo=UTC)
T4 = datetime(2024, 5, 1, 12, 0, 3, 750000, tzinfo=UTC)


def device_of(broker: MosquittoBroker, **fields: Any) -> SparkplugDevice:
    return SparkplugDevice.model_validate(
        {
            "name": DEVICE,
            "protocol": "sparkplug-b",
            "host": broker.host,
            "port": broker.port,
            "timeout": 2.0,
            "rebirth_interval": 0.2,
            "reconnect_backoff": {"initial": 0.05, "maximum": 0.5},
            **fields,
        }
    )


def point(name: str, group: str, metric: str, device: str | None = None, **fields: Any) -> SparkplugPoint:
    return SparkplugPoint.model_validate(
        {
            "name": name,
            "device": DEVICE,
            "target": {"submodel": SUBMODEL, "path": name},
            "group_id": group,
            "edge_node": "line-1",
            "metric": metric,
            **({"sparkplug_device": device} if device is not None else {}),
            **fields,
        }
    )


class Samples:
    """The sink: records every sample the connector emits."""

    def __init__(self) -> None:
        self.items: list[RawSample] = []

    def __call__(self, sample: RawSample) -> None:
        self.items.append(sample)

    def of(self, name: str) -> list[RawSample]:
        return [sample for sample in self.items if sample.point == name]

    async def wait_for(self, name: str, check: Callable[[RawSample], bool], after: int = 0) -> RawSample:
        def found() -> RawSample | None:
            return next((sample for sample in self.of(name)[after:] if check(sample)), None)

        await wait_until(lambda: found() is not None, within=5.0, what=f"a matching sample of {name!r}")
        sample = found()
        assert sample is not None
        return sample


def good(value: Any) -> Callable[[RawSample], bool]:
    return lambda sample: sample.quality is Quality.GOOD and sample.raw == value


def without_value(quality: Quality, reason: QualityReason) -> Callable[[RawSample], bool]:
    return lambda sample: sample.raw is None and sample.quality is quality and sample.reason is reason


@asynccontextmanager
async def running(
    device: SparkplugDevice, points: Sequence[SparkplugPoint], samples: Samples
) -> AsyncIterator[SparkplugConnector]:
    """A started connector, once the broker acknowledged its subscriptions."""
    async with SparkplugConnector(device, points, samples) as connector:
        await wait_until(lambda: connector.subscribed, within=5.0, what="SUBACK")
        yield connector


@asynccontextmanager
async def edge_node(broker: MosquittoBroker, group: str, bd_seq: int = 0) -> AsyncIterator[EdgeNodeSimulator]:
    node = EdgeNodeSimulator(broker.host, broker.port, group, "line-1", bd_seq)
    await asyncio.to_thread(node.start)
    try:
        yield node
    finally:
        await asyncio.to_thread(node.stop)


def new_group() -> str:
    """A group id of the test's own on the shared broker."""
    return f"plant-{secrets.token_hex(4)}"


def rebirth(command: Command) -> bool:
    metric = command.metrics.get("Node Control/Rebirth")
    return command.kind == "NCMD" and metric is not None and metric.boolean_value is True


async def until(node: EdgeNodeSimulator, check: Callable[[Command], bool]) -> Command:
    return await asyncio.to_thread(node.wait_for_command, check)


NODE_METRICS = [Metric("Line/Speed", 1.5, DOUBLE, alias=1, timestamp=T1)]
PUMP_METRICS = [
    Metric("Pressure", -120, INT32, alias=2, timestamp=T2),
    Metric("SetPoint", 40, INT16, alias=3),
    Metric("Running", True, BOOLEAN, alias=4),
]


async def born(node: EdgeNodeSimulator, samples: Samples) -> None:
    """NBIRTH and DBIRTH of ``pump``, and their values arrived."""
    await asyncio.to_thread(node.node_birth, NODE_METRICS)
    await asyncio.to_thread(node.device_birth, "pump", PUMP_METRICS)
    await samples.wait_for("pressure", good(-120))


def line_points(group: str) -> list[SparkplugPoint]:
    return [
        point("speed", group, "Line/Speed"),
        point("pressure", group, "Pressure", "pump"),
        point("set-point", group, "SetPoint", "pump", access="read-write"),
        point("running", group, "Running", "pump"),
    ]


# --- births, data, aliases, timestamps -------------------------------------------------------------


async def test_births_and_data_give_values_with_the_metrics_timestamps_by_name_and_by_alias(
    mosquitto: MosquittoBroker,
) -> None:
    group, samples = new_group(), Samples()
    async with running(device_of(mosquitto), line_points(group), samples), edge_node(mosquitto, group) as node:
        await born(node, samples)
        assert (await samples.wait_for("speed", good(1.5))).source_time == T1
        assert (await samples.wait_for("pressure", good(-120))).source_time == T2  # Int32 in two's complement
        assert (await samples.wait_for("running", good(True))).raw is True

        await asyncio.to_thread(node.node_data, [Metric(None, 2.25, alias=1, timestamp=T3)])  # by alias only
        assert (await samples.wait_for("speed", good(2.25))).source_time == T3
        await asyncio.to_thread(node.device_data, "pump", [Metric("Pressure", 300, INT32)], T4)  # payload time
        assert (await samples.wait_for("pressure", good(300))).source_time == T4


async def test_the_sequence_number_wraps_after_255_without_a_rebirth(mosquitto: MosquittoBroker) -> None:
    group, samples = new_group(), Samples()
    async with running(device_of(mosquitto), line_points(group), samples) as connector:
        async with edge_node(mosquitto, group) as node:
            await born(node, samples)

            def send_many() -> None:
                for index in range(300):
                    node.node_data([Metric(None, float(index), alias=1)])

            await asyncio.to_thread(send_many)
            await samples.wait_for("speed", good(299.0))
        assert connector.rebirth_requests == {}
        assert connector.bad_input == {}
        assert [s.raw for s in samples.of("speed")][-300:] == [float(index) for index in range(300)]


async def test_a_sequence_gap_requests_a_rebirth_and_the_new_birth_makes_values_good(
    mosquitto: MosquittoBroker,
) -> None:
    group, samples = new_group(), Samples()
    async with (
        running(device_of(mosquitto), line_points(group), samples) as connector,
        edge_node(mosquitto, group) as node,
    ):
        await born(node, samples)
        node.skip(3)
        await asyncio.to_thread(node.node_data, [Metric(None, 9.0, alias=1)])
        await until(node, rebirth)
        await samples.wait_for("speed", without_value(Quality.UNCERTAIN, QualityReason.LAST_USABLE))
        assert connector.bad_input == {"seq-gap": 1}
        assert all(sample.raw != 9.0 for sample in samples.of("speed"))  # data after a gap is not trusted

        # the node answers with a new session; its values are good again
        await born(node, samples)
        seen = len(samples.of("speed"))
        await asyncio.to_thread(node.node_data, [Metric(None, 3.0, alias=1)])
        await samples.wait_for("speed", good(3.0), after=seen)


async def test_data_of_a_node_whose_birth_the_hub_missed_requests_a_rebirth(mosquitto: MosquittoBroker) -> None:
    group, samples = new_group(), Samples()
    async with edge_node(mosquitto, group) as node:
        await asyncio.to_thread(node.node_birth, NODE_METRICS)  # before the hub is there
        async with running(device_of(mosquitto), line_points(group), samples) as connector:
            await asyncio.to_thread(node.node_data, [Metric(None, 5.0, alias=1)])
            await until(node, rebirth)
            assert connector.rebirth_requests == {f"{group}/line-1": 1}
            assert samples.of("speed") == []
            await asyncio.to_thread(node.node_birth, [Metric("Line/Speed", 6.0, DOUBLE, alias=1)])
            await samples.wait_for("speed", good(6.0))


# --- deaths ----------------------------------------------------------------------------------------


async def test_ddeath_and_ndeath_turn_values_bad_and_a_stale_ndeath_is_ignored(mosquitto: MosquittoBroker) -> None:
    group, samples = new_group(), Samples()
    async with running(device_of(mosquitto), line_points(group), samples), edge_node(mosquitto, group, 7) as node:
        await born(node, samples)
        await samples.wait_for("speed", good(1.5))

        await asyncio.to_thread(node.device_death, "pump")
        await samples.wait_for("pressure", without_value(Quality.BAD, QualityReason.NO_COMMUNICATION))
        await samples.wait_for("running", without_value(Quality.BAD, QualityReason.NO_COMMUNICATION))
        await asyncio.to_thread(node.node_data, [Metric(None, 1.75, alias=1)])
        await samples.wait_for("speed", good(1.75))  # the node itself lives on
        assert all(sample.quality is Quality.GOOD for sample in samples.of("speed"))

        await asyncio.to_thread(node.node_death, 6)  # the NDEATH of an earlier session
        await asyncio.to_thread(node.node_data, [Metric(None, 2.0, alias=1)])
        await samples.wait_for("speed", good(2.0))

        await asyncio.to_thread(node.node_death)
        await samples.wait_for("speed", without_value(Quality.BAD, QualityReason.NO_COMMUNICATION))


async def test_the_nodes_will_is_its_death(mosquitto: MosquittoBroker) -> None:
    """A node that vanishes without a word: the broker publishes its will (NDEATH), and its values turn bad."""
    group, samples = new_group(), Samples()
    async with running(device_of(mosquitto), line_points(group), samples):
        node = EdgeNodeSimulator(mosquitto.host, mosquitto.port, group, "line-1", bd_seq=3)
        await asyncio.to_thread(node.start)
        await born(node, samples)
        await asyncio.to_thread(node.vanish)
        await samples.wait_for("speed", without_value(Quality.BAD, QualityReason.NO_COMMUNICATION))
        await samples.wait_for("pressure", without_value(Quality.BAD, QualityReason.NO_COMMUNICATION))


# --- set-points ------------------------------------------------------------------------------------


async def test_a_set_point_goes_out_as_dcmd_with_the_births_datatype(mosquitto: MosquittoBroker) -> None:
    group, samples = new_group(), Samples()
    points = [*line_points(group), point("speed-set", group, "Line/Speed", access="read-write")]
    async with running(device_of(mosquitto), points, samples) as connector, edge_node(mosquitto, group) as node:
        with pytest.raises(DeviceError, match="offline"):
            await connector.write(RawWrite(DEVICE, "set-point", 55))
        await born(node, samples)

        await connector.write(RawWrite(DEVICE, "set-point", 55))
        command = await until(node, lambda c: c.kind == "DCMD" and "SetPoint" in c.metrics)
        assert command.device == "pump"
        assert (command.metrics["SetPoint"].datatype, command.metrics["SetPoint"].int_value) == (INT16, 55)

        await connector.write(RawWrite(DEVICE, "set-point", -3))
        negative = await until(node, lambda c: c.kind == "DCMD" and c.metrics["SetPoint"].int_value != 55)
        assert negative.metrics["SetPoint"].int_value == 2**32 - 3  # Int16 -3, 32-bit two's complement

        await connector.write(RawWrite(DEVICE, "speed-set", 2.5))
        node_command = await until(node, lambda c: c.kind == "NCMD" and "Line/Speed" in c.metrics)
        assert node_command.metrics["Line/Speed"].double_value == 2.5

        with pytest.raises(TypeMismatchError, match="Int16"):
            await connector.write(RawWrite(DEVICE, "set-point", 70000))
        with pytest.raises(TypeMismatchError, match="integer"):
            await connector.write(RawWrite(DEVICE, "set-point", "fast"))
        with pytest.raises(NotWritableError):
            await connector.write(RawWrite(DEVICE, "pressure", 1))
        await asyncio.to_thread(node.device_death, "pump")
        await samples.wait_for("pressure", without_value(Quality.BAD, QualityReason.NO_COMMUNICATION))
        with pytest.raises(DeviceError, match="offline"):
            await connector.write(RawWrite(DEVICE, "set-point", 1))


# --- bad input -------------------------------------------------------------------------------------


def _oversized(node: EdgeNodeSimulator) -> None:
    node.node_data([Metric("Line/Note", "x" * 4096, STRING)])


def _malformed(node: EdgeNodeSimulator) -> None:
    node.publish_raw("NDATA", b"\x0a\xff\xff\xff\xff\x0f\x12")  # a truncated field: not a protobuf


def _unknown_alias(node: EdgeNodeSimulator) -> None:
    node.node_data([Metric(None, 4.0, alias=99)])


def _redefined_type(node: EdgeNodeSimulator) -> None:
    node.node_birth([Metric("Line/Speed", "fast", STRING, alias=1)])


def _seq_gap(node: EdgeNodeSimulator) -> None:
    node.skip(5)
    node.node_data([Metric(None, 4.0, alias=1)])


def _birth_without_bd_seq(node: EdgeNodeSimulator) -> None:
    node.node_birth(NODE_METRICS, with_bd_seq=False)


def _alias_given_twice(node: EdgeNodeSimulator) -> None:
    node.node_birth([Metric("Line/Speed", 1.0, DOUBLE, alias=1), Metric("Line/Torque", 2.0, DOUBLE, alias=1)])


def _wrong_value(node: EdgeNodeSimulator) -> None:
    node.node_data([Metric(None, "not a double", alias=1)])


@pytest.mark.parametrize(
    ("kind", "send", "logged"),
    [
        ("oversized", _oversized, "above max_payload"),
        ("malformed", _malformed, "not a Sparkplug B protobuf"),
        ("unknown-alias", _unknown_alias, "alias 99 is defined by no birth"),
        ("type-redefined", _redefined_type, "redefines metric 'Line/Speed' from Double to String"),
        ("seq-gap", _seq_gap, "where"),
        ("wrong-value-type", _wrong_value, "needs double_value"),
        ("malformed", _birth_without_bd_seq, "NBIRTH without a bdSeq metric"),
        ("malformed", _alias_given_twice, "gives alias 1 to two metrics"),
    ],
)
async def test_bad_input_is_counted_and_logged_once_and_the_connector_goes_on(
    mosquitto: MosquittoBroker,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    send: Callable[[EdgeNodeSimulator], None],
    logged: str,
) -> None:
    group, samples = new_group(), Samples()
    caplog.set_level(logging.WARNING, LOGGER)
    async with (
        running(device_of(mosquitto, max_payload=1024), line_points(group), samples) as connector,
        edge_node(mosquitto, group) as node,
    ):
        for _ in range(2):
            await born(node, samples)
            await asyncio.to_thread(send, node)
        await wait_until(lambda: connector.bad_input.get(kind) == 2, within=5.0, what=f"two {kind} counted")
        warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert logged in warnings[0].getMessage()
        assert f"{group}/line-1" in warnings[0].getMessage()

        # the connector is still there: a good session delivers values again
        await born(node, samples)
        seen = len(samples.of("speed"))
        await asyncio.to_thread(node.node_data, [Metric(None, 8.0, alias=1)])
        await samples.wait_for("speed", good(8.0), after=seen)
        assert connector.connected


async def test_a_redefined_type_turns_its_point_bad(mosquitto: MosquittoBroker) -> None:
    group, samples = new_group(), Samples()
    async with running(device_of(mosquitto), line_points(group), samples), edge_node(mosquitto, group) as node:
        await born(node, samples)
        await asyncio.to_thread(node.node_birth, [Metric("Line/Speed", "fast", STRING, alias=1)])
        await samples.wait_for("speed", without_value(Quality.BAD, QualityReason.DECODE_ERROR))


async def test_unsupported_datatypes_and_null_values_give_bad_samples(mosquitto: MosquittoBroker) -> None:
    group, samples = new_group(), Samples()
    points = [point("table", group, "Recipe"), point("counter", group, "Counter"), point("speed", group, "Line/Speed")]
    async with running(device_of(mosquitto), points, samples) as connector, edge_node(mosquitto, group) as node:
        birth = [
            Metric("Recipe", b"\x00", DATASET, alias=5),
            Metric("Counter", 2**64 - 1, UINT64, alias=6),
            Metric("Line/Speed", 0.0, DOUBLE, alias=1, is_null=True),
        ]
        await asyncio.to_thread(node.node_birth, birth)
        await samples.wait_for("table", without_value(Quality.BAD, QualityReason.DECODE_ERROR))
        assert (await samples.wait_for("counter", good(2**64 - 1))).raw == 2**64 - 1
        await samples.wait_for("speed", without_value(Quality.BAD, QualityReason.SENSOR_FAILURE))
        assert connector.bad_input == {"unsupported-datatype": 1}


async def test_a_lost_broker_turns_values_bad_and_a_new_birth_good_again(
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    broker = mosquitto_factory()
    group, samples = new_group(), Samples()
    async with running(device_of(broker), line_points(group), samples) as connector:
        node = EdgeNodeSimulator(broker.host, broker.port, group, "line-1")
        await asyncio.to_thread(node.start)
        try:
            await born(node, samples)
            await asyncio.to_thread(broker.stop)
            await samples.wait_for("speed", without_value(Quality.BAD, QualityReason.NO_COMMUNICATION))
            await asyncio.to_thread(broker.restart)
            await wait_until(lambda: connector.subscribed, within=10.0, what="the connector back")
        finally:
            await asyncio.to_thread(node.stop)
        async with edge_node(broker, group) as again:
            seen = len(samples.of("speed"))
            await asyncio.to_thread(again.node_birth, [Metric("Line/Speed", 4.5, DOUBLE, alias=1)])
            await samples.wait_for("speed", good(4.5), after=seen)


async def test_a_primary_host_publishes_its_state_online_and_offline_with_one_timestamp(
    mosquitto: MosquittoBroker,
) -> None:
    host_id = f"hub-{secrets.token_hex(4)}"
    topic = f"spBv1.0/STATE/{host_id}"
    listener = await asyncio.to_thread(MqttListener(mosquitto.host, mosquitto.port, topic).start)
    try:
        async with running(device_of(mosquitto, host_id=host_id), line_points(new_group()), Samples()):
            await wait_until(lambda: len(listener.messages) >= 1, within=5.0, what="the online STATE")
        await wait_until(lambda: len(listener.messages) >= 2, within=5.0, what="the offline STATE")
    finally:
        await asyncio.to_thread(listener.stop)
        await asyncio.to_thread(publish, mosquitto.host, mosquitto.port, topic, b"", retain=True)
    online, offline = listener.payloads()
    assert online["online"] is True
    assert offline == {"online": False, "timestamp": online["timestamp"]}
    assert all(message.retain is False and message.qos == 1 for message in listener.messages)  # live, not replayed
    assert abs(online["timestamp"] / 1000 - datetime.now(UTC).timestamp()) < 60


# --- mapping files and AID -------------------------------------------------------------------------


def test_a_mapping_file_names_metrics_by_group_node_device_and_name() -> None:
    mapping = parse_mapping(
        {
            "devices": [{"name": DEVICE, "protocol": "sparkplug-b", "host": "broker.example", "max_payload": 4096}],
            "points": [
                {
                    "name": "pressure",
                    "device": DEVICE,
                    "target": {"submodel": SUBMODEL, "path": "Pressure"},
                    "group_id": "plant",
                    "edge_node": "line-1",
                    "sparkplug_device": "pump",
                    "metric": "Inputs/Pressure",
                    "unit": "BAR",
                }
            ],
        }
    )
    (pressure,) = mapping.points
    assert isinstance(pressure, SparkplugPoint)
    assert (pressure.group_id, pressure.edge_node, pressure.sparkplug_device, pressure.metric) == (
        "plant",
        "line-1",
        "pump",
        "Inputs/Pressure",
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("group_id", "plant/a", "group_id"),
        ("edge_node", "line+", "edge_node"),
        ("metric", "Node Control/Rebirth", "control metric"),
    ],
)
def test_ids_that_are_not_one_topic_level_and_control_set_points_are_refused(
    field: str, value: str, message: str
) -> None:
    fields = {
        "name": "p",
        "device": DEVICE,
        "target": {"submodel": SUBMODEL, "path": "P"},
        "group_id": "plant",
        "edge_node": "line-1",
        "metric": "Speed",
        "access": "read-write",
        field: value,
    }
    with pytest.raises(Exception, match=message):
        parse_mapping(
            {"devices": [{"name": DEVICE, "protocol": "sparkplug-b", "host": "broker.example"}], "points": [fields]}
        )


def test_the_aid_describes_sparkplug_as_an_mqtt_interface_and_reads_back_as_the_same_mapping() -> None:
    mapping = parse_mapping(
        {
            "devices": [{"name": DEVICE, "protocol": "sparkplug-b", "host": "broker.example", "port": 8883}],
            "points": [
                {
                    "name": "pressure",
                    "device": DEVICE,
                    "target": {"submodel": SUBMODEL, "path": "Pressure"},
                    "group_id": "plant",
                    "edge_node": "line-1",
                    "sparkplug_device": "pump",
                    "metric": "Inputs/Pressure #1",
                },
                {
                    "name": "speed",
                    "device": DEVICE,
                    "target": {"submodel": SUBMODEL, "path": "Speed"},
                    "group_id": "plant",
                    "edge_node": "line-1",
                    "metric": "Line/Speed",
                    "access": "read-write",
                },
            ],
        }
    )
    description, configuration = mapping_to_aid(mapping, DEVICE)
    assert "AssetInterfacesDescription" in str(description.semantic_id)
    back = mapping_from_aid(description, configuration)
    assert back.devices[0].model_dump() == mapping.devices[0].model_dump()
    assert {p.name: p.model_dump() for p in back.points} == {p.name: p.model_dump() for p in mapping.points}


# --- the whole hub ---------------------------------------------------------------------------------


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def write_twin(folder: Path) -> Path:
    def property_(id_short: str, value_type: str) -> dict[str, Any]:
        return {"modelType": "Property", "idShort": id_short, "valueType": value_type}

    environment = {
        "assetAdministrationShells": [
            {
                "modelType": "AssetAdministrationShell",
                "id": "urn:aas-server:tests:sparkplug:aas:line",
                "idShort": "Line",
                "assetInformation": {"assetKind": "Instance", "globalAssetId": "urn:aas-server:tests:asset:line"},
                "submodels": [{"type": "ModelReference", "keys": [{"type": "Submodel", "value": SUBMODEL}]}],
            }
        ],
        "submodels": [
            {
                "modelType": "Submodel",
                "id": SUBMODEL,
                "idShort": "LineData",
                "kind": "Instance",
                "submodelElements": [
                    property_("Speed", "xs:double"),
                    property_("Pressure", "xs:int"),
                    property_("SetPoint", "xs:short"),
                ],
            }
        ],
    }
    path = folder / "line.json"
    path.write_text(json.dumps(environment), encoding="utf-8")
    return path


def write_mapping(folder: Path, group: str) -> Path:
    def metric(name: str, path: str, metric_name: str, device: str | None, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "device": DEVICE,
            "target": {"submodel": SUBMODEL, "path": path},
            "group_id": group,
            "edge_node": "line-1",
            "metric": metric_name,
            **({"sparkplug_device": device} if device else {}),
            **extra,
        }

    mapping = {
        "devices": [
            {
                "name": DEVICE,
                "protocol": "sparkplug-b",
                "host": "127.0.0.1",
                "port": 1883,
                "rebirth_interval": 0.2,
                "reconnect_backoff": {"initial": 0.05, "maximum": 0.5},
            }
        ],
        "points": [
            metric("speed", "Speed", "Line/Speed", None),
            metric("pressure", "Pressure", "Pressure", "pump"),
            metric("set-point", "SetPoint", "SetPoint", "pump", access="read-write"),
        ],
    }
    path = folder / "line-mapping.yaml"
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    return path


async def test_the_hub_serves_sparkplug_values_with_their_timestamps_and_sends_set_points(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    group = new_group()
    settings = HubSettings(
        data_dir=tmp_path / "data",
        twins=[write_twin(tmp_path)],
        mappings=[write_mapping(tmp_path, group)],
        device_endpoints={DEVICE: f"{mosquitto.host}:{mosquitto.port}"},
        rest=RestSettings(enabled=True, port=0),
        opcua=OpcUaSettings(enabled=False),
        security=SecuritySettings(enabled=False),
    )
    async with Hub(settings) as hub, aiohttp.ClientSession() as http, edge_node(mosquitto, group) as node:
        assert hub.rest_url is not None
        elements = f"{hub.rest_url}/submodels/{b64(SUBMODEL)}/submodel-elements"

        async def read(path: str) -> tuple[Any, str, str | None, datetime | None]:
            async with http.get(f"{elements}/{path}/$value") as response:
                assert response.status == 200, await response.text()
                body = await response.json()
                stamp = response.headers.get("X-AAS-Source-Timestamp")
                return (
                    body[path],
                    response.headers["X-AAS-Quality"],
                    response.headers.get("X-AAS-Quality-Reason"),
                    datetime.fromisoformat(stamp) if stamp else None,
                )

        # the hub's connector subscribes in the background: the node's first data asks it for a birth
        async def birth_until_good() -> tuple[Any, str, str | None, datetime | None]:
            await asyncio.to_thread(node.node_birth, NODE_METRICS)
            await asyncio.to_thread(node.device_birth, "pump", PUMP_METRICS)
            return await read("Pressure")

        pressure = await eventually(birth_until_good, lambda found: found[:2] == (-120, "good"), within=10.0)
        assert pressure[3] == T2
        speed = await eventually(lambda: read("Speed"), lambda found: found[:2] == (1.5, "good"))
        assert speed[3] == T1

        await asyncio.to_thread(node.node_data, [Metric(None, 2.75, alias=1, timestamp=T3)])
        speed = await eventually(lambda: read("Speed"), lambda found: found[0] == 2.75)
        assert speed[3] == T3

        async with http.patch(f"{elements}/SetPoint/$value", json=55) as response:
            assert response.status == 204, await response.text()
        command = await until(node, lambda c: c.kind == "DCMD" and "SetPoint" in c.metrics)
        assert (command.device, command.metrics["SetPoint"].int_value) == ("pump", 55)

        await asyncio.to_thread(node.device_death, "pump")
        dead = await eventually(lambda: read("Pressure"), lambda found: found[1] == "bad")
        assert dead[:3] == (-120, "bad", "no_communication")  # the last value is kept
        assert (await read("Speed"))[:2] == (2.75, "good")
        async with http.patch(f"{elements}/SetPoint/$value", json=56) as response:
            refused = await response.json()
            assert response.status == 502, refused  # the device is offline: nothing is sent
        assert "offline" in json.dumps(refused)
        assert (await read("SetPoint"))[0] == 55  # a refused write loses nothing and changes nothing
        assert not any(c.kind == "DCMD" and c.metrics["SetPoint"].int_value == 56 for c in node.commands)

        await asyncio.to_thread(node.node_death)
        dead_speed = await eventually(lambda: read("Speed"), lambda found: found[1] == "bad")
        assert dead_speed[:3] == (2.75, "bad", "no_communication")

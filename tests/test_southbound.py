"""The hub's southbound wiring end to end: one twin fed by a Modbus PLC, a legacy OPC UA server and MQTT.

One hub runs for the module with the kiln twin ``tests/data/southbound/kiln.json`` (an AAS JSON
environment: Properties with semanticIds and valueTypes, one Operation, one ConceptDescription) and
the mapping ``tests/data/southbound/kiln-mapping.yaml``, whose three devices are real servers on
loopback, reached through ``device_endpoints``:

- the kiln's PLC, a ``ModbusDeviceServer`` on an OS-chosen port: the chamber temperature as float32
  in °F shown in °C, the firing state as an enumeration, the door switch as one register bit, the
  batch code as a string and a read-write int16 temperature set-point with scale 0.1;
- the burner controller, an asyncua server: the gas flow (subscribed, litres per minute shown in
  m³/h), the damper position (writable) and the method ``StartFiring`` behind the twin's Operation;
- a climate sensor publishing JSON with its own timestamp to the session's Mosquitto broker.

The tests check what a user of the hub notices: values, quality and timestamp headers over REST,
EngineeringUnits over OPC UA, writes and calls reaching the devices, generated ConceptDescriptions,
and the AID/AIMC submodels that describe the wiring and load back as the same mapping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import pytest_asyncio
import yaml
from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.server.server import Server
from pydantic import SecretStr

from aas_server.config import HubSettings, OpcUaSettings, RestSettings, Role, SecuritySettings, UserSettings
from aas_server.devices.modbus_server import ModbusDeviceServer
from aas_server.errors import MappingError
from aas_server.mapping.schema import MappingFile, Table, load_mapping
from aas_server.model.units import lookup_unit
from aas_server.opcua.node_ids import node_id_for
from aas_server.opcua.projection import UNECE_UNITS_NAMESPACE
from aas_server.runtime.hub import Hub, load_mapping_source
from tests.mqtt_broker import MosquittoBroker, free_port, publish
from tests.support import CLIENT_URI, ROOT, ClientCertificate, eventually, trust_client_certificate

on_module_loop = pytest.mark.asyncio(loop_scope="module")
"""The async tests share the module's event loop, and so the one hub and its three devices."""

DATA = ROOT / "tests" / "data" / "southbound"
TWIN = DATA / "kiln.json"
MAPPING = DATA / "kiln-mapping.yaml"
SHELL = "urn:aas-server:tests:southbound:aas:kiln"
SUBMODEL = "urn:aas-server:tests:southbound:sm:kiln:operational-data"
TEMPERATURE_CONCEPT = "0173-1#02-AAV232#002"
LEGACY_NAMESPACE = "urn:aas-server:tests:southbound:legacy-kiln"
CLIMATE_TOPIC = "tests/southbound/kiln-hall/climate"
CLIMATE_TIME = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
VIEWER, VIEWER_PASSWORD = "viewer", "southbound-viewer"
AID_SEMANTIC_ID = "https://admin-shell.io/idta/AssetInterfacesDescription/1/1/Submodel"
UNIT_VOCABULARY = "https://vocabulary.uncefact.org/UnitMeasureCode#"

# Registers of the kiln's PLC (zero-based, unit id 1).
TEMPERATURE_REGISTER = 0  # input registers 0-1, float32 °F
STATE_REGISTER = 2  # input register, uint16 enumeration
SWITCHES_REGISTER = 3  # input register, bit 5: door open
BATCH_REGISTER = 4  # input registers 4-7, 8 ASCII characters
SET_POINT_REGISTER = 10  # holding register, int16, 0.1 °C
DOOR_BIT = 5


def b64(identifier: str) -> str:
    """An identifier as the REST API wants it in a path (base64url without padding)."""
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def float32_words(value: float) -> list[int]:
    """A float32 as two big-endian registers, most significant word first."""
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [high, low]


def ascii_words(text: str, registers: int) -> list[int]:
    """Text as registers of two ASCII characters each, first character in the high byte, NUL-padded."""
    padded = text.encode("ascii").ljust(registers * 2, b"\0")
    return [int.from_bytes(padded[index : index + 2], "big") for index in range(0, len(padded), 2)]


def climate_payload(humidity: float, time: str) -> str:
    return json.dumps({"climate": {"humidity": humidity, "unit": "%"}, "time": time})


class BurnerController:
    """An asyncua server playing the kiln's legacy burner controller, reached with security policy None.

    Its object ``Kiln`` holds ``GasFlow`` (Double, litres per minute), ``DamperPosition`` (Int16,
    writable) and the method ``StartFiring(targetTemperature: Double, rampMinutes: Int16) ->
    (programId: String, estimatedMinutes: Double)``. ``calls`` records each call's arguments.
    """

    def __init__(self, port: int) -> None:
        self.url = f"opc.tcp://127.0.0.1:{port}/"
        self.namespace_index = 0
        self.calls: list[tuple[ua.Variant, ua.Variant]] = []
        self._server: Server | None = None

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("legacy burner controller")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.namespace_index = await server.register_namespace(LEGACY_NAMESPACE)
        index = self.namespace_index
        kiln = await server.nodes.objects.add_object(f"ns={index};s=Kiln", ua.QualifiedName("Kiln", index))
        await kiln.add_variable(
            f"ns={index};s=Kiln.GasFlow", ua.QualifiedName("GasFlow", index), ua.Variant(0.0, ua.VariantType.Double)
        )
        damper = await kiln.add_variable(
            f"ns={index};s=Kiln.DamperPosition",
            ua.QualifiedName("DamperPosition", index),
            ua.Variant(20, ua.VariantType.Int16),
        )
        await damper.set_writable()
        await kiln.add_method(
            f"ns={index};s=Kiln.StartFiring",
            ua.QualifiedName("StartFiring", index),
            self._start_firing,
            [ua.VariantType.Double, ua.VariantType.Int16],
            [ua.VariantType.String, ua.VariantType.Double],
        )
        await server.start()
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _start_firing(self, parent: ua.NodeId, target: ua.Variant, ramp: ua.Variant) -> list[ua.Variant]:
        self.calls.append((target, ramp))
        program = f"P{target.Value:.0f}-{ramp.Value}"
        return [ua.Variant(program, ua.VariantType.String), ua.Variant(target.Value / 10 + ramp.Value)]

    def _node_id(self, name: str) -> ua.NodeId:
        return ua.NodeId.from_string(f"ns={self.namespace_index};s=Kiln.{name}")

    async def set(self, name: str, value: ua.Variant, source_time: datetime) -> None:
        """Change a variable as the controller itself would, with its own source timestamp."""
        assert self._server is not None
        data_value = ua.DataValue(value, SourceTimestamp=cast(Any, source_time))
        await self._server.write_attribute_value(self._node_id(name), data_value)

    async def read(self, name: str) -> ua.Variant:
        assert self._server is not None
        data_value = await self._server.get_node(self._node_id(name)).read_data_value()
        assert data_value.Value is not None
        return data_value.Value


@dataclass(frozen=True)
class Kiln:
    """The running hub and the three devices it reads."""

    hub: Hub
    rest_url: str
    http: aiohttp.ClientSession
    plc: ModbusDeviceServer
    burner: BurnerController
    broker: MosquittoBroker

    def element_url(self, path: str) -> str:
        return f"{self.rest_url}/submodels/{b64(SUBMODEL)}/submodel-elements/{path}"


@dataclass(frozen=True)
class Reading:
    """What ``GET .../$value`` answers for a Property: the value and the quality headers."""

    value: Any
    quality: str
    reason: str | None
    source_time: datetime


async def read(kiln: Kiln, path: str) -> Reading:
    async with kiln.http.get(f"{kiln.element_url(path)}/$value") as response:
        assert response.status == 200, await response.text()
        body = await response.json()
        headers = response.headers
    id_short = path.rsplit(".", 1)[-1]
    assert isinstance(body, dict)
    assert list(body) == [id_short], body
    return Reading(
        body[id_short],
        headers["X-AAS-Quality"],
        headers.get("X-AAS-Quality-Reason"),
        datetime.fromisoformat(headers["X-AAS-Source-Timestamp"]),
    )


async def settled(kiln: Kiln, path: str, value: Any, quality: str = "good", within: float = 5.0) -> Reading:
    """The reading of ``path`` once it shows ``value`` with ``quality`` (the device is polled or subscribed)."""
    reading: Reading = await eventually(
        lambda: read(kiln, path), lambda found: found.value == value and found.quality == quality, within
    )
    return reading


async def patch_value(kiln: Kiln, path: str, value: Any) -> tuple[int, Any]:
    async with kiln.http.patch(f"{kiln.element_url(path)}/$value", json=value) as response:
        return response.status, (await response.json() if response.status != 204 else None)


async def get_json(kiln: Kiln, path: str) -> Any:
    async with kiln.http.get(f"{kiln.rest_url}{path}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


def operation_variable(id_short: str, value_type: str, value: str) -> dict[str, Any]:
    """An OperationVariable holding a Property (AAS Part 2, ``OperationRequest.inputArguments``)."""
    return {"value": {"modelType": "Property", "idShort": id_short, "valueType": value_type, "value": value}}


def points_by_name(mapping: MappingFile) -> dict[str, dict[str, Any]]:
    return {point.name: point.model_dump() for point in mapping.points}


async def clear_retained_climate(broker: MosquittoBroker) -> None:
    """Remove the retained climate message from the session's broker (an empty retained payload)."""
    await asyncio.to_thread(publish, broker.host, broker.port, CLIMATE_TOPIC, b"", retain=True)


def set_initial_registers(plc: ModbusDeviceServer) -> None:
    plc.set_registers(Table.INPUT_REGISTER, TEMPERATURE_REGISTER, float32_words(212.0))
    plc.set_registers(Table.INPUT_REGISTER, STATE_REGISTER, [1])
    plc.set_registers(Table.INPUT_REGISTER, SWITCHES_REGISTER, [1 << DOOR_BIT | 1])
    plc.set_registers(Table.INPUT_REGISTER, BATCH_REGISTER, ascii_words("K7-0042", 4))
    plc.set_registers(Table.HOLDING_REGISTER, SET_POINT_REGISTER, [8000])


def hub_settings(data_dir: Path, mapping: Path, endpoints: dict[str, str], views: bool = True) -> HubSettings:
    return HubSettings(
        data_dir=data_dir,
        twins=[TWIN],
        mappings=[mapping],
        device_endpoints=endpoints,
        rest=RestSettings(enabled=views, port=0),
        opcua=OpcUaSettings(
            enabled=views,
            port=0,
            users=[UserSettings(name=VIEWER, password=SecretStr(VIEWER_PASSWORD), role=Role.READ_ONLY)],
        ),
        security=SecuritySettings(enabled=False),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kiln(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoBroker, opcua_client_certificate: ClientCertificate
) -> AsyncIterator[Kiln]:
    """One hub for the module, with the PLC, the burner controller and a retained climate message in place."""
    data_dir = tmp_path_factory.mktemp("southbound-hub")
    trust_client_certificate(data_dir, opcua_client_certificate)
    async with AsyncExitStack() as stack:
        plc = await stack.enter_async_context(ModbusDeviceServer(port=0))
        set_initial_registers(plc)
        burner = BurnerController(free_port())
        await burner.start()
        stack.push_async_callback(burner.stop)
        await burner.set("GasFlow", ua.Variant(250.0, ua.VariantType.Double), datetime.now(UTC))
        retained = climate_payload(41.5, "2024-05-01T12:00:00.250Z")
        await asyncio.to_thread(publish, mosquitto.host, mosquitto.port, CLIMATE_TOPIC, retained, retain=True)
        stack.push_async_callback(clear_retained_climate, mosquitto)
        endpoints = {
            "kiln-plc": f"{plc.host}:{plc.port}",
            "legacy-kiln": burner.url,
            "kiln-climate": f"{mosquitto.host}:{mosquitto.port}",
        }
        hub = await stack.enter_async_context(Hub(hub_settings(data_dir, MAPPING, endpoints)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        assert hub.rest_url is not None
        yield Kiln(hub, hub.rest_url, http, plc, burner, mosquitto)


@asynccontextmanager
async def opcua_session(url: str, certificate: ClientCertificate) -> AsyncIterator[Client]:
    client = Client(url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certificate.certificate),
        str(certificate.private_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user(VIEWER)
    client.set_password(VIEWER_PASSWORD)
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


@asynccontextmanager
async def hub_session(kiln: Kiln, certificate: ClientCertificate) -> AsyncIterator[tuple[Client, int]]:
    """An OPC UA session with the hub, and the namespace index of its twins."""
    projection = kiln.hub.opcua
    assert projection is not None
    async with opcua_session(projection.endpoint_url, certificate) as client:
        yield client, projection.namespace_index


def hub_node(client: Client, namespace: int, path: str) -> Node:
    """The hub's OPC UA variable of a kiln element."""
    return client.get_node(ua.NodeId(ua.String(node_id_for(SUBMODEL, path)), ua.Int16(namespace)))


# --- reading ------------------------------------------------------------------------------------


@on_module_loop
async def test_modbus_values_arrive_in_celsius_as_names_bits_and_text(kiln: Kiln) -> None:
    plc = kiln.plc
    assert (await settled(kiln, "ChamberTemperature", 100.0)).reason is None  # 212 °F
    await settled(kiln, "FiringState", "heating")
    await settled(kiln, "DoorOpen", True)
    await settled(kiln, "BatchCode", "K7-0042")
    await settled(kiln, "TemperatureSetpoint", 800.0)

    plc.set_registers(Table.INPUT_REGISTER, TEMPERATURE_REGISTER, float32_words(-40.0))
    plc.set_registers(Table.INPUT_REGISTER, STATE_REGISTER, [3])
    plc.set_registers(Table.INPUT_REGISTER, SWITCHES_REGISTER, [1 | 1 << (DOOR_BIT + 1)])  # neighbours set, bit 5 not
    plc.set_registers(Table.INPUT_REGISTER, BATCH_REGISTER, ascii_words("K7-0043A", 4))
    await settled(kiln, "ChamberTemperature", -40.0)
    await settled(kiln, "FiringState", "cooling")
    await settled(kiln, "DoorOpen", False)
    await settled(kiln, "BatchCode", "K7-0043A")

    # A state number the mapping does not name: the last name stays, marked bad.
    plc.set_registers(Table.INPUT_REGISTER, STATE_REGISTER, [9])
    unnamed = await settled(kiln, "FiringState", "cooling", quality="bad")
    assert unnamed.reason == "out_of_range"
    plc.set_registers(Table.INPUT_REGISTER, STATE_REGISTER, [2])
    await settled(kiln, "FiringState", "soaking")


@on_module_loop
async def test_a_subscribed_opcua_variable_arrives_converted_with_the_servers_timestamp(kiln: Kiln) -> None:
    source_time = datetime(2024, 5, 1, 11, 59, 0, 500000, tzinfo=UTC)
    await kiln.burner.set("GasFlow", ua.Variant(400.0, ua.VariantType.Double), source_time)
    reading = await settled(kiln, "Burner.GasFlow", 24.0)  # 400 l/min
    assert reading.source_time == source_time


@on_module_loop
async def test_mqtt_values_carry_the_payloads_timestamp(kiln: Kiln) -> None:
    retained = await settled(kiln, "AmbientHumidity", 41.5)
    assert retained.source_time == CLIMATE_TIME
    payload = climate_payload(43.25, "2024-05-01T14:05:00+02:00")
    await asyncio.to_thread(publish, kiln.broker.host, kiln.broker.port, CLIMATE_TOPIC, payload)
    fresh = await settled(kiln, "AmbientHumidity", 43.25)
    assert fresh.source_time == datetime(2024, 5, 1, 12, 5, tzinfo=UTC)


@on_module_loop
async def test_opcua_clients_see_the_value_in_its_target_unit(
    kiln: Kiln, opcua_client_certificate: ClientCertificate
) -> None:
    kiln.plc.set_registers(Table.INPUT_REGISTER, TEMPERATURE_REGISTER, float32_words(32.0))
    await settled(kiln, "ChamberTemperature", 0.0)
    async with hub_session(kiln, opcua_client_certificate) as (client, namespace):
        temperature = hub_node(client, namespace, "ChamberTemperature")
        units = await (await temperature.get_child("0:EngineeringUnits")).read_value()
        assert units.NamespaceUri == UNECE_UNITS_NAMESPACE
        assert units.UnitId == lookup_unit("CEL").unit_id
        assert units.DisplayName.Text == "°C"
        assert await temperature.read_value() == 0.0
        gas_flow = hub_node(client, namespace, "Burner.GasFlow")
        flow_units = await (await gas_flow.get_child("0:EngineeringUnits")).read_value()
        assert flow_units.UnitId == lookup_unit("MQH").unit_id
        assert flow_units.DisplayName.Text == "m³/h"


@on_module_loop
async def test_rest_and_opcua_give_an_unchanged_value_the_same_source_timestamp(
    kiln: Kiln, opcua_client_certificate: ClientCertificate
) -> None:
    """ARCHITECTURE.md, *One truth*: one value, one timestamp, whichever view it is read through.

    The PLC is polled every 50 ms and the value does not change while the two views are read.
    """
    kiln.plc.set_registers(Table.INPUT_REGISTER, TEMPERATURE_REGISTER, float32_words(50.0))
    await settled(kiln, "ChamberTemperature", 10.0)
    async with hub_session(kiln, opcua_client_certificate) as (client, namespace):
        data_value = await hub_node(client, namespace, "ChamberTemperature").read_data_value()
        rest = await read(kiln, "ChamberTemperature")
    assert data_value.Value is not None
    assert (data_value.Value.Value, data_value.SourceTimestamp) == (rest.value, rest.source_time)


# --- quality ------------------------------------------------------------------------------------


@on_module_loop
async def test_a_modbus_outage_turns_its_values_bad_and_a_restart_good_again(kiln: Kiln) -> None:
    kiln.plc.set_registers(Table.INPUT_REGISTER, TEMPERATURE_REGISTER, float32_words(212.0))
    await settled(kiln, "ChamberTemperature", 100.0)
    await kiln.plc.stop()
    try:
        outage = await settled(kiln, "ChamberTemperature", 100.0, quality="bad")
        assert outage.reason == "no_communication"
        await eventually(lambda: read(kiln, "BatchCode"), lambda reading: reading.quality == "bad")
        status, body = await patch_value(kiln, "TemperatureSetpoint", 700.0)
        assert status in (502, 504), body
        # The other devices are not held up by the dead one.
        assert (await read(kiln, "Burner.GasFlow")).quality == "good"
        assert (await read(kiln, "AmbientHumidity")).quality == "good"
    finally:
        await kiln.plc.start()
    recovered = await settled(kiln, "ChamberTemperature", 100.0)
    assert recovered.reason is None
    assert recovered.source_time > outage.source_time
    assert kiln.plc.get_registers(Table.HOLDING_REGISTER, SET_POINT_REGISTER, 1) != (7000,)


# --- writing and calling --------------------------------------------------------------------------


@on_module_loop
async def test_a_set_point_written_over_rest_reaches_the_plcs_register(kiln: Kiln) -> None:
    plc = kiln.plc
    await settled(kiln, "TemperatureSetpoint", 800.0)
    assert await patch_value(kiln, "TemperatureSetpoint", 850.5) == (204, None)
    assert plc.get_registers(Table.HOLDING_REGISTER, SET_POINT_REGISTER, 1) == (8505,)
    assert await patch_value(kiln, "TemperatureSetpoint", -12.3) == (204, None)
    assert plc.get_registers(Table.HOLDING_REGISTER, SET_POINT_REGISTER, 1) == (0x10000 - 123,)
    await settled(kiln, "TemperatureSetpoint", -12.3)

    status, body = await patch_value(kiln, "TemperatureSetpoint", 850.55)  # finer than 0.1 °C
    assert status == 400
    assert "resolution" in body["messages"][0]["text"]
    status, body = await patch_value(kiln, "TemperatureSetpoint", 3300.0)  # beyond int16 at 0.1 °C
    assert status == 400
    assert plc.get_registers(Table.HOLDING_REGISTER, SET_POINT_REGISTER, 1) == (0x10000 - 123,)
    status, body = await patch_value(kiln, "ChamberTemperature", 20.0)
    assert status == 403


@on_module_loop
async def test_a_value_written_over_rest_reaches_the_legacy_opcua_server(kiln: Kiln) -> None:
    await settled(kiln, "Burner.DamperPosition", 20)
    assert await patch_value(kiln, "Burner.DamperPosition", 35) == (204, None)
    assert await kiln.burner.read("DamperPosition") == ua.Variant(35, ua.VariantType.Int16)
    await settled(kiln, "Burner.DamperPosition", 35)
    status, body = await patch_value(kiln, "Burner.DamperPosition", 40000)  # beyond the server's Int16
    assert status == 400, body
    assert await kiln.burner.read("DamperPosition") == ua.Variant(35, ua.VariantType.Int16)
    status, body = await patch_value(kiln, "Burner.GasFlow", 1.0)
    assert status == 403, body


@on_module_loop
async def test_an_operation_invoked_over_rest_calls_the_legacy_method(kiln: Kiln) -> None:
    calls = kiln.burner.calls
    request = {
        "inputArguments": [
            operation_variable("TargetTemperature", "xs:double", "1200"),
            operation_variable("RampMinutes", "xs:short", "30"),
        ]
    }
    async with kiln.http.post(f"{kiln.element_url('StartFiring')}/invoke", json=request) as response:
        assert response.status == 200, await response.text()
        result = await response.json()
    assert result["success"] is True, result
    assert result["executionState"] == "Completed"
    outputs = {argument["value"]["idShort"]: argument["value"]["value"] for argument in result["outputArguments"]}
    assert outputs == {"ProgramId": "P1200-30", "EstimatedMinutes": "150.0"}
    assert [(target.Value, ramp.Value, ramp.VariantType) for target, ramp in calls] == [
        (1200.0, 30, ua.VariantType.Int16)
    ]

    value_only = {"inputArguments": {"TargetTemperature": 950.0, "RampMinutes": 5}}
    async with kiln.http.post(f"{kiln.element_url('StartFiring')}/invoke/$value", json=value_only) as response:
        assert response.status == 200, await response.text()
        result = await response.json()
    assert result["outputArguments"] == {"ProgramId": "P950-5", "EstimatedMinutes": 100.0}
    assert len(calls) == 2


# --- self-description ---------------------------------------------------------------------------


@on_module_loop
async def test_mapped_semantic_ids_resolve_to_concept_descriptions_with_units(kiln: Kiln) -> None:
    temperature = await get_json(kiln, f"/concept-descriptions/{b64(TEMPERATURE_CONCEPT)}")
    assert temperature["id"] == TEMPERATURE_CONCEPT
    (specification,) = temperature["embeddedDataSpecifications"]
    content = specification["dataSpecificationContent"]
    assert content["modelType"] == "DataSpecificationIec61360"
    assert content["preferredName"] == [{"language": "en", "text": "Chamber temperature"}]
    assert content["unit"] == "°C"
    assert content["unitId"]["keys"][0]["value"] == UNIT_VOCABULARY + "CEL"
    assert content["dataType"] == "REAL_MEASURE"

    flow = await get_json(kiln, f"/concept-descriptions/{b64('urn:aas-server:tests:concept:GasFlow:1:0')}")
    flow_content = flow["embeddedDataSpecifications"][0]["dataSpecificationContent"]
    assert flow_content["unit"] == "m³/h"
    damper = await get_json(kiln, f"/concept-descriptions/{b64('urn:aas-server:tests:concept:DamperPosition:1:0')}")
    assert damper["embeddedDataSpecifications"][0]["dataSpecificationContent"]["dataType"] == "INTEGER_MEASURE"

    # The twin's own description of a semanticId is kept, not replaced by a generated one.
    batch = await get_json(kiln, f"/concept-descriptions/{b64('urn:aas-server:tests:concept:BatchCode:1:0')}")
    batch_content = batch["embeddedDataSpecifications"][0]["dataSpecificationContent"]
    assert batch_content["preferredName"] == [{"language": "en", "text": "Batch code of the kiln load"}]


@on_module_loop
async def test_the_shell_holds_aid_and_aimc_submodels_describing_its_wiring(kiln: Kiln) -> None:
    shell = await get_json(kiln, f"/shells/{b64(SHELL)}")
    referenced = {reference["keys"][-1]["value"] for reference in shell["submodels"]}
    assert {SUBMODEL, f"{SHELL}/aid", f"{SHELL}/aimc"} <= referenced

    aid = await get_json(kiln, f"/submodels/{b64(SHELL + '/aid')}")
    assert aid["semanticId"]["keys"][0]["value"] == AID_SEMANTIC_ID
    titles = {
        child["value"]
        for interface in aid["submodelElements"]
        for child in interface["value"]
        if child["idShort"] == "title"
    }
    assert titles == {"kiln-plc", "legacy-kiln", "kiln-climate"}


@on_module_loop
async def test_aid_and_aimc_exported_over_rest_load_back_as_the_same_mapping(kiln: Kiln, tmp_path: Path) -> None:
    submodels = [await get_json(kiln, f"/submodels/{b64(SHELL + suffix)}") for suffix in ("/aid", "/aimc")]
    package = tmp_path / "kiln-wiring.json"
    environment = {"assetAdministrationShells": [], "submodels": submodels, "conceptDescriptions": []}
    package.write_text(json.dumps(environment, ensure_ascii=False), encoding="utf-8")

    from_package = await asyncio.to_thread(load_mapping_source, package)
    from_file = load_mapping(MAPPING)
    assert points_by_name(from_package) == points_by_name(from_file)
    assert {device.name: device.model_dump() for device in from_package.devices} == {
        device.name: device.model_dump() for device in from_file.devices
    }


# --- refusal at start -----------------------------------------------------------------------------


def contradicting_mapping(folder: Path, semantic_ids: dict[str, str]) -> Path:
    """The kiln mapping with the ``semantic_id`` of the named points replaced."""
    data = yaml.safe_load(MAPPING.read_text(encoding="utf-8"))
    for point in data["points"]:
        if point["name"] in semantic_ids:
            point["semantic_id"] = semantic_ids[point["name"]]
    path = folder / "contradicting.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@on_module_loop
async def test_a_point_contradicting_its_elements_semantic_id_stops_the_hub_from_starting(tmp_path: Path) -> None:
    mapping = contradicting_mapping(tmp_path, {"kiln.FiringState": "urn:aas-server:tests:concept:KilnMode:1:0"})
    with pytest.raises(MappingError) as refused:
        async with Hub(hub_settings(tmp_path / "data", mapping, {}, views=False)):
            pass
    message = str(refused.value)
    assert f"{mapping}: points[1] (kiln.FiringState).semantic_id" in message
    assert "urn:aas-server:tests:concept:KilnMode:1:0" in message
    assert "urn:aas-server:tests:concept:FiringState:1:0" in message


@on_module_loop
async def test_every_contradicting_point_is_named_with_its_reason(tmp_path: Path) -> None:
    mapping = contradicting_mapping(
        tmp_path,
        {
            "kiln.FiringState": "urn:aas-server:tests:concept:KilnMode:1:0",
            "burner.GasFlow": "urn:aas-server:tests:concept:AirFlow:1:0",
        },
    )
    with pytest.raises(MappingError) as refused:
        async with Hub(hub_settings(tmp_path / "data", mapping, {}, views=False)):
            pass
    message = str(refused.value)
    assert "points[1] (kiln.FiringState).semantic_id" in message
    assert "points[5] (burner.GasFlow).semantic_id" in message
    assert "urn:aas-server:tests:concept:KilnMode:1:0" in message
    assert "urn:aas-server:tests:concept:AirFlow:1:0" in message

"""Demo faults: the simulated bottling line plays a jam, a temperature excursion, a stuck sensor and
bearing wear, seen through the hub's REST values and alarms like real plant trouble."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from asyncua import Client, Node
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from aas_server.cli import _demo_settings, _parser, demo_settings_path
from aas_server.config import ApiKeySettings, HubSettings, load_settings
from aas_server.devices.bottling_line import BEARING_WEAR_RATE, JAM_FAULT_CODE, BottlingLineSimulator
from aas_server.mapping.schema import load_mapping
from aas_server.opcua.node_ids import node_id_for
from aas_server.runtime.demo_faults import fault_submodel_id
from aas_server.runtime.hub import Hub
from tests.support import ROOT, ClientCertificate, eventually, wait_until
from tests.test_end_to_end import (
    FILLER,
    FILLER_MOTOR,
    SENSOR,
    element_url,
    get_value,
    opcua_node,
    opcua_session,
    settings_for,
)


def with_faults(data_dir: Path, *faults: str) -> HubSettings:
    settings = settings_for(data_dir)
    return settings.model_copy(update={"simulator": settings.simulator.model_copy(update={"faults": list(faults)})})


async def active_alarms(http: aiohttp.ClientSession, rest_url: str) -> set[str]:
    async with http.get(f"{rest_url}/alarms", params={"state": "active"}) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
    return {alarm["id"] for alarm in body["result"]}


async def test_a_jam_stops_the_filler_sets_its_fault_code_and_raises_alarms(tmp_path: Path) -> None:
    async with Hub(with_faults(tmp_path, "jam", "temperature-excursion")) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        speed_url = element_url(hub.rest_url, FILLER_MOTOR, "RotationalSpeed")
        fault_url = element_url(hub.rest_url, FILLER, "FaultCode")
        speed, _ = await eventually(lambda: get_value(http, speed_url), lambda answer: answer[0] == 0.0, within=10)
        assert speed == 0.0
        code, quality = await eventually(
            lambda: get_value(http, fault_url), lambda answer: answer[0] == JAM_FAULT_CODE, within=10
        )
        assert (code, quality) == (JAM_FAULT_CODE, "good")
        # the excursion takes the product past the 30 °C limit; both show up as active alarms
        alarms = await eventually(
            lambda: active_alarms(http, hub.rest_url or ""),
            lambda names: {"filler-fault", "filler-temperature"} <= names,
            within=40,
        )
        assert {"filler-fault", "filler-temperature"} <= alarms


async def test_a_stuck_sensor_keeps_its_value_while_the_product_heats_up(tmp_path: Path) -> None:
    async with (
        Hub(with_faults(tmp_path, "sensor-stuck", "temperature-excursion")) as hub,
        aiohttp.ClientSession() as http,
    ):
        simulator, rest_url = hub.simulator, hub.rest_url
        assert simulator is not None
        assert rest_url is not None
        stuck = simulator.state.stuck_temperature
        assert stuck is not None
        temperature_url = element_url(rest_url, SENSOR, "Temperature")
        shown, _ = await eventually(
            lambda: get_value(http, temperature_url), lambda answer: answer[0] == round(stuck, 1), within=10
        )
        await wait_until(lambda: simulator.state.temperature > 30.0, within=40, what="the product above 30 °C")
        # the device has polled many times since; the twin still shows the frozen reading, no alarm
        value, quality = await get_value(http, temperature_url)
        assert (value, quality) == (shown, "good")
        assert "filler-temperature" not in await active_alarms(http, rest_url)
        simulator.clear_faults()
        # the real reading shows again: far above the frozen one (clearing also ends the excursion, so
        # the product starts cooling from above 30 °C at once and may be just under 30 by the next poll)
        await eventually(lambda: get_value(http, temperature_url), lambda answer: answer[0] >= shown + 5.0, within=10)


def test_bearing_wear_drives_the_filler_motor_vibration_past_its_limits() -> None:
    mapping = load_mapping(ROOT / "mappings" / "bottling-line.yaml")
    simulator = BottlingLineSimulator(mapping, seed=7)
    for _ in range(30):
        simulator.step(1.0)
    healthy = simulator.read_point("filler-motor.Vibration")
    assert healthy < 4.5
    simulator.inject_fault("bearing-wear")
    minutes = 0
    while simulator.read_point("filler-motor.Vibration") < 7.1:  # the demo rule's HighHigh
        for _ in range(60):
            simulator.step(1.0)
        minutes += 1
        assert minutes <= 10, "vibration did not drift up"
    assert minutes == pytest.approx((7.1 - healthy) / BEARING_WEAR_RATE / 60, abs=1.5)
    assert simulator.read_point("capper-motor.Vibration") < 4.5
    simulator.clear_faults()
    simulator.step(1.0)
    assert simulator.read_point("filler-motor.Vibration") < 4.5


def test_unknown_fault_is_refused_with_the_known_ones() -> None:
    simulator = BottlingLineSimulator(load_mapping(ROOT / "mappings" / "bottling-line.yaml"))
    with pytest.raises(ValueError, match="unknown fault 'fire'; known: bearing-wear, jam"):
        simulator.inject_fault("fire")
    assert simulator.faults == ()


def test_demo_fault_option_is_repeatable_and_reaches_the_simulator_settings(tmp_path: Path) -> None:
    arguments = _parser().parse_args(
        ["demo", "--data-dir", str(tmp_path), "--fault", "jam", "--fault", "sensor-stuck", "--fault", "jam"]
    )
    settings = _demo_settings(arguments)
    assert settings.simulator.faults == ["jam", "sensor-stuck"]
    assert load_settings(demo_settings_path()).simulator.faults == []
    with pytest.raises(SystemExit):
        _parser().parse_args(["demo", "--fault", "fire"])


def operation_url(rest_url: str, operation: str) -> str:
    return element_url(rest_url, fault_submodel_id("bottling-plc"), operation) + "/invoke"


KIND_JAM = {
    "inputArguments": [
        {"value": {"modelType": "Property", "idShort": "Kind", "valueType": "xs:string", "value": "jam"}}
    ]
}


async def test_faults_are_injected_and_cleared_by_operations_under_the_access_rules(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    security = load_settings(demo_settings_path()).security
    viewer_key = secrets.token_hex(16)
    viewer = ApiKeySettings(name="viewer", roles=["read-only"], sha256=hashlib.sha256(viewer_key.encode()).hexdigest())
    settings = settings.model_copy(
        update={"security": security.model_copy(update={"api_keys": [*security.api_keys, viewer]})}
    )
    operator = {"X-API-Key": "demo-operator-key"}
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        simulator, rest_url = hub.simulator, hub.rest_url
        assert simulator is not None
        assert rest_url is not None
        # anonymous callers must authenticate; a read-only key is refused; nothing happens
        async with http.post(operation_url(rest_url, "InjectFault"), json=KIND_JAM) as response:
            assert response.status == 401, await response.text()
        async with http.post(
            operation_url(rest_url, "InjectFault"), json=KIND_JAM, headers={"X-API-Key": viewer_key}
        ) as response:
            assert response.status == 403, await response.text()
        assert simulator.faults == ()
        unknown = {"inputArguments": [{"value": {**KIND_JAM["inputArguments"][0]["value"], "value": "fire"}}]}
        async with http.post(operation_url(rest_url, "InjectFault"), json=unknown, headers=operator) as response:
            result = await response.json()
        assert result["success"] is False, result
        assert "Kind 'fire' is not one of bearing-wear, jam" in result["messages"][0]["text"]
        assert simulator.faults == ()

        async with http.post(operation_url(rest_url, "InjectFault"), json=KIND_JAM, headers=operator) as response:
            assert response.status == 200, await response.text()
            result = await response.json()
        assert result["success"] is True, result
        assert result["outputArguments"][0]["value"]["value"] == "jam"
        fault_url = element_url(rest_url, FILLER, "FaultCode")
        await eventually(lambda: get_value(http, fault_url), lambda answer: answer[0] == JAM_FAULT_CODE, within=10)

        async with http.post(operation_url(rest_url, "ClearFaults"), json={}, headers=operator) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["success"] is True
        await eventually(lambda: get_value(http, fault_url), lambda answer: answer[0] == 0, within=10)
        speed_url = element_url(rest_url, FILLER_MOTOR, "RotationalSpeed")
        await eventually(lambda: get_value(http, speed_url), lambda answer: answer[0] > 100.0, within=20)


async def test_opc_ua_operators_inject_and_clear_faults_and_viewers_may_not(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    async with Hub(settings_for(tmp_path)) as hub:
        simulator, projection = hub.simulator, hub.opcua
        assert simulator is not None
        assert projection is not None
        submodel_id = fault_submodel_id("bottling-plc")
        invoke_name = f"{projection.types_namespace_index}:Invoke"

        async def method(client: Client, operation: str) -> tuple[Node, Node]:
            node = opcua_node(client, node_id_for(submodel_id, operation), projection.namespace_index)
            return node, await node.get_child(invoke_name)

        url = projection.endpoint_url
        async with opcua_session(url, opcua_client_certificate, "viewer", "demo-viewer") as client:
            node, invoke = await method(client, "InjectFault")
            with pytest.raises(UaStatusCodeError) as raised:
                await node.call_method(invoke.nodeid, "jam")
            assert raised.value.code == StatusCodes.BadUserAccessDenied
        assert "jam" not in simulator.faults, "a viewer's call changes nothing"
        async with opcua_session(url, opcua_client_certificate, "operator", "demo-operator") as client:
            node, invoke = await method(client, "InjectFault")
            assert await node.call_method(invoke.nodeid, "sensor-stuck") == "sensor-stuck"
            assert simulator.faults == ("sensor-stuck",)
            node, invoke = await method(client, "ClearFaults")
            assert await node.call_method(invoke.nodeid) == ""
        assert list(simulator.faults) == []

"""The spine, end to end: simulated PLC → Modbus connector → mapping → store → REST and OPC UA, and back.

Everything runs for real on loopback with OS-chosen ports: the pymodbus device server (the demo
simulator with its physics paused, so the test owns the registers), the hub with its SQLite
database, its aiohttp REST API and its asyncua OPC UA server, and an asyncua client subscribing.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from aas_server.cli import demo_settings_path
from aas_server.config import HubSettings, load_settings
from aas_server.mapping.schema import Table
from aas_server.opcua.node_ids import node_id_for, submodel_node_id
from aas_server.runtime.hub import Hub
from tests.support import CLIENT_URI, ROOT, ClientCertificate, eventually, status_of, value_of, wait_until

SENSOR = "urn:aas-server:demo:sm:filler-temperature-sensor:operational-data"
FILLER_MOTOR = "urn:aas-server:demo:sm:filler-motor:operational-data"
FILLER = "urn:aas-server:demo:sm:filler:operational-data"
NAMEPLATE = "urn:aas-server:demo:sm:filler-motor:nameplate"


def b64(identifier: str) -> str:
    return base64.urlsafe_b64encode(identifier.encode()).decode().rstrip("=")


def settings_for(data_dir: Path, modbus_port: int = 0) -> HubSettings:
    settings = load_settings(demo_settings_path())
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "rest": settings.rest.model_copy(update={"port": 0}),
            "opcua": settings.opcua.model_copy(update={"port": 0}),
            "simulator": settings.simulator.model_copy(update={"port": modbus_port}),
            "security": settings.security.model_copy(update={"enabled": False}),
        }
    )


@asynccontextmanager
async def opcua_session(url: str, certificate: ClientCertificate, user: str, password: str) -> AsyncIterator[Client]:
    client = Client(url, timeout=5)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certificate.certificate),
        str(certificate.private_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    client.set_user(user)
    client.set_password(password)
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


def opcua_node(client: Client, identifier: str, namespace: int) -> Node:
    return client.get_node(ua.NodeId(ua.String(identifier), ua.Int16(namespace)))


class DataChanges:
    """asyncua subscription handler collecting data values per node."""

    def __init__(self) -> None:
        self.values: list[ua.DataValue] = []
        self.arrived = asyncio.Event()

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        self.values.append(data.monitored_item.Value)
        self.arrived.set()


def element_url(rest_url: str, submodel_id: str, path: str) -> str:
    return f"{rest_url}/submodels/{b64(submodel_id)}/submodel-elements/{path}"


def unwrapped(body: Any, id_short: str) -> Any:
    """The value of an element's ``$value`` answer, which is idShort-wrapped: ``{"Temperature": 21.5}``."""
    assert isinstance(body, dict), body
    assert list(body) == [id_short], body
    return body[id_short]


async def get_value(http: aiohttp.ClientSession, url: str) -> tuple[Any, str]:
    async with http.get(f"{url}/$value") as response:
        assert response.status == 200, await response.text()
        return unwrapped(await response.json(), url.rsplit("/", 1)[-1]), response.headers["X-AAS-Quality"]


async def test_device_values_and_set_points_flow_both_ways_and_survive_outages(
    tmp_path: Path, opcua_client_certificate: ClientCertificate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aas_server")
    async with Hub(settings_for(tmp_path)) as hub, aiohttp.ClientSession() as http:
        simulator = hub.simulator
        assert simulator is not None
        assert hub.opcua is not None
        assert hub.rest_url is not None
        simulator.pause()
        namespace = hub.opcua.namespace_index
        temperature_url = element_url(hub.rest_url, SENSOR, "Temperature")

        async with opcua_session(
            hub.opcua.endpoint_url, opcua_client_certificate, "operator", "demo-operator"
        ) as client:
            temperature_node = opcua_node(client, node_id_for(SENSOR, "Temperature"), namespace)
            assert await temperature_node.read_data_type_as_variant_type() == ua.VariantType.Double
            changes = DataChanges()
            subscription = await client.create_subscription(10, changes)
            await subscription.subscribe_data_change(temperature_node)

            # 1. A holding register changes on the device: the scaled value reaches REST and OPC UA within 1 s.
            simulator.server.set_registers(Table.HOLDING_REGISTER, 20, [253])  # int16, scale 0.1 -> 25.3 °C
            loop = asyncio.get_running_loop()
            started = loop.time()
            await eventually(lambda: get_value(http, temperature_url), lambda result: result == (25.3, "good"), 1.0)
            await wait_until(
                lambda: any(value_of(v) == 25.3 and status_of(v) == 0 for v in changes.values),
                within=1.0 - (loop.time() - started) + 0.05,
                what="OPC UA notification of 25.3",
            )
            notification = next(v for v in changes.values if value_of(v) == 25.3)
            assert notification.SourceTimestamp is not None

            # 2. A set-point written through REST reaches the device's registers before the answer.
            set_point_url = f"{element_url(hub.rest_url, FILLER_MOTOR, 'SpeedSetpoint')}/$value"
            async with http.patch(set_point_url, json=1234.5) as r:
                assert r.status == 204, await r.text()
            assert simulator.read_point("filler-motor.SpeedSetpoint") == pytest.approx(1234.5)

            # 3. A set-point written through OPC UA reaches the device the same way.
            fill_node = opcua_node(client, node_id_for(FILLER, "FillVolumeSetpoint"), namespace)
            await fill_node.write_value(ua.DataValue(ua.Variant(512.5, ua.VariantType.Double)))
            assert simulator.read_point("filler.FillVolumeSetpoint") == pytest.approx(512.5)
            assert list(simulator.server.get_registers(Table.HOLDING_REGISTER, 32, 1)) == [5125]
            # A wrong type is refused by OPC UA and changes nothing on the device.
            with pytest.raises(UaStatusCodeError) as refused:
                await fill_node.write_value(ua.DataValue(ua.Variant("lots", ua.VariantType.String)))
            assert refused.value.code == StatusCodes.BadTypeMismatch
            assert simulator.read_point("filler.FillVolumeSetpoint") == pytest.approx(512.5)
            # A read-only point is refused on REST with an AAS Result.
            async with http.patch(f"{temperature_url}/$value", json=30.0) as r:
                assert r.status == 403
                assert (await r.json())["messages"][0]["messageType"] == "Error"

            # 4. The device goes away: the last value stays, with a bad status on OPC UA and REST.
            await simulator.stop()
            await wait_until(
                lambda: any(status_of(v) == StatusCodes.BadNoCommunication for v in changes.values),
                within=5.0,
                what="BadNoCommunication",
            )
            bad = await temperature_node.read_data_value(raise_on_bad_status=False)
            assert status_of(bad) == StatusCodes.BadNoCommunication
            assert value_of(bad) is None  # OPC 10000-4 §7.7.1: a Bad DataValue carries no value
            async with http.get(f"{temperature_url}/$value") as r:
                assert unwrapped(await r.json(), "Temperature") == 25.3
                assert r.headers["X-AAS-Quality"] == "bad"
                assert r.headers["X-AAS-Quality-Reason"] == "no_communication"
            # A write while the device is away is an AAS Result error, and nothing changes.
            async with http.patch(set_point_url, json=99.0) as r:
                assert r.status in (502, 504), await r.text()
                assert "messages" in await r.json()

            # 5. The device comes back on the same port: values recover by themselves.
            await simulator.start()
            await wait_until(
                lambda: status_of(changes.values[-1]) == 0 and value_of(changes.values[-1]) == 25.3,
                within=10.0,
                what="recovery to Good",
            )
            assert await get_value(http, temperature_url) == (25.3, "good")

        # 6. The REST-written values are kept across a restart.
        async with http.patch(f"{element_url(hub.rest_url, NAMEPLATE, 'SerialNumber')}/$value", json="SN-E2E-1") as r:
            assert r.status == 204, await r.text()

    outages = [r for r in caplog.records if r.levelno == logging.WARNING and "unreachable" in r.getMessage()]
    recoveries = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(outages) == 1, [r.getMessage() for r in outages]
    assert len(recoveries) == 1, [r.getMessage() for r in recoveries]

    # Restart without the device (its port refuses connections): the values written through REST come back
    # from the database; the device-bound set-point keeps its last value, marked as no longer good.
    restarted = settings_for(tmp_path).model_copy(
        update={
            "simulator": settings_for(tmp_path).simulator.model_copy(update={"enabled": False}),
            "device_endpoints": {"bottling-plc": "127.0.0.1:1"},
        }
    )
    async with Hub(restarted) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        async with http.get(f"{element_url(hub.rest_url, NAMEPLATE, 'SerialNumber')}/$value") as r:
            assert unwrapped(await r.json(), "SerialNumber") == "SN-E2E-1"
            assert r.headers["X-AAS-Quality"] == "good"
        async with http.get(f"{element_url(hub.rest_url, FILLER_MOTOR, 'SpeedSetpoint')}/$value") as r:
            assert unwrapped(await r.json(), "SpeedSetpoint") == pytest.approx(1234.5)
            assert r.headers["X-AAS-Quality"] in ("uncertain", "bad")
        async with http.get(f"{element_url(hub.rest_url, FILLER, 'FillVolumeSetpoint')}/$value") as r:
            assert unwrapped(await r.json(), "FillVolumeSetpoint") == pytest.approx(512.5)


def test_check_rejects_a_broken_mapping_with_file_item_field_and_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = (ROOT / "mappings" / "bottling-line.yaml").read_text(encoding="utf-8")
    broken.write_text(text.replace("data_type: int16", "data_type: int17", 1), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "aas_server", "check", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"{broken}: points[" in result.stderr
    assert "(filler-temperature-sensor.Temperature).data_type" in result.stderr
    assert "Traceback" not in result.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "aas_server", "check", str(ROOT / "mappings" / "bottling-line.yaml"),
         str(demo_settings_path())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "21 points" in ok.stdout


async def test_model_changes_attachments_and_packages_survive_a_restart(tmp_path: Path) -> None:
    """REST model changes are journaled before the answer; files and packages live in the same database."""
    settings = settings_for(tmp_path).model_copy(update={"mappings": [], "simulator": HubSettings().simulator})
    submodel = {
        "modelType": "Submodel",
        "id": "urn:aas-server:test:sm:maintenance",
        "idShort": "Maintenance",
        "submodelElements": [
            {"modelType": "Property", "idShort": "LastService", "valueType": "xs:date", "value": "2026-11-01"},
            {"modelType": "File", "idShort": "Report", "contentType": "application/pdf"},
        ],
    }
    sm = b64("urn:aas-server:test:sm:maintenance")
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        async with http.post(f"{hub.rest_url}/submodels", json=submodel) as r:
            assert r.status == 201, await r.text()
        element = {"modelType": "Property", "idShort": "Technician", "valueType": "xs:string", "value": "Ada"}
        async with http.post(f"{hub.rest_url}/submodels/{sm}/submodel-elements", json=element) as r:
            assert r.status == 201, await r.text()
        form = aiohttp.FormData()
        form.add_field("fileName", "report.pdf")
        form.add_field("file", b"%PDF-1.7 service report", filename="report.pdf", content_type="application/pdf")
        async with http.put(f"{hub.rest_url}/submodels/{sm}/submodel-elements/Report/attachment", data=form) as r:
            assert r.status == 204, await r.text()
        async with http.delete(f"{hub.rest_url}/submodels/{b64(NAMEPLATE)}") as r:
            assert r.status == 204, await r.text()
        package = (ROOT / "tests" / "data" / "packages" / "v30_environment.xml").read_bytes()
        upload = aiohttp.FormData()
        upload.add_field("file", package, filename="v30.xml", content_type="application/xml")
        async with http.post(f"{hub.rest_url}/packages", data=upload) as r:
            assert r.status == 201, await r.text()
            package_id = r.headers["Location"].rsplit("/", 1)[-1]

    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        async with http.get(f"{hub.rest_url}/submodels/{sm}/$value") as r:
            assert r.status == 200
            value = await r.json()
        assert value["LastService"] == "2026-11-01"
        assert value["Technician"] == "Ada"
        async with http.get(f"{hub.rest_url}/submodels/{sm}/submodel-elements/Report/attachment") as r:
            assert r.status == 200
            assert await r.read() == b"%PDF-1.7 service report"
        async with http.get(f"{hub.rest_url}/submodels/{b64(NAMEPLATE)}") as r:
            assert r.status == 404
        async with http.get(f"{hub.rest_url}/packages/{package_id}") as r:
            assert r.status == 200, await r.text()
            assert await r.read() == package


async def test_submodels_added_and_deleted_through_rest_appear_and_vanish_in_opcua(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    settings = settings_for(tmp_path).model_copy(update={"mappings": [], "simulator": HubSettings().simulator})
    identifier = "urn:aas-server:test:sm:added-through-rest"
    submodel = {
        "modelType": "Submodel",
        "id": identifier,
        "idShort": "AddedThroughRest",
        "submodelElements": [{"modelType": "Property", "idShort": "Level", "valueType": "xs:int", "value": "42"}],
    }
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        assert hub.opcua is not None
        namespace = hub.opcua.namespace_index
        session = opcua_session(hub.opcua.endpoint_url, opcua_client_certificate, "viewer", "demo-viewer")
        async with session as client:
            level = opcua_node(client, node_id_for(identifier, "Level"), namespace)
            submodel_node = opcua_node(client, submodel_node_id(identifier), namespace)

            async def browse_names() -> list[str]:
                folder = await client.nodes.objects.get_child([f"{namespace}:AASEnvironment", f"{namespace}:Submodels"])
                return [(await child.read_browse_name()).Name for child in await folder.get_children()]

            assert identifier not in await browse_names()
            async with http.post(f"{hub.rest_url}/submodels", json=submodel) as r:
                assert r.status == 201, await r.text()
            names = await eventually(browse_names, lambda found: identifier in found, 1.0)
            assert identifier in names
            assert (await submodel_node.read_display_name()).Text == "AddedThroughRest"
            assert await level.read_value() == 42
            assert await level.read_data_type_as_variant_type() == ua.VariantType.Int32

            async with http.delete(f"{hub.rest_url}/submodels/{b64(identifier)}") as r:
                assert r.status == 204, await r.text()
            await eventually(browse_names, lambda found: identifier not in found, 1.0)
            with pytest.raises(UaStatusCodeError) as gone:
                await submodel_node.read_browse_name()
            assert gone.value.code == StatusCodes.BadNodeIdUnknown

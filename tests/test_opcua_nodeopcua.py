"""The demo plant's OPC UA server as node-opcua (a client the project did not write) sees it.

One hub runs the demo plant (simulated PLC over Modbus, its physics paused so the test owns the
registers) with the client trust list on. node-opcua scripts (``tests/nodeopcua/session.js``, see
``tests/node_opcua.py``) connect with Basic256Sha256 SignAndEncrypt as the demo operator and as the
read-only viewer, browse, translate a tag path, read, write a set-point that reaches the PLC, and
subscribe to a value the PLC changes; and they try what must fail: SecurityPolicy None, anonymous
writes, a certificate that is not trusted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from aas_server.cli import demo_settings_path
from aas_server.config import HubSettings, load_settings
from aas_server.devices.bottling_line import BottlingLineSimulator
from aas_server.mapping.schema import Table
from aas_server.opcua.node_ids import SUBMODELS_FOLDER, node_id_for, submodel_node_id
from aas_server.runtime.hub import Hub
from tests.node_opcua import NodeOpcua
from tests.support import CLIENT_URI, ClientCertificate, make_client_certificate, trust_client_certificate

pytestmark = pytest.mark.asyncio(loop_scope="module")

SENSOR = "urn:aas-server:demo:sm:filler-temperature-sensor:operational-data"
FILLER = "urn:aas-server:demo:sm:filler:operational-data"
OPERATOR = {"name": "operator", "password": "demo-operator"}
VIEWER = {"name": "viewer", "password": "demo-viewer"}


@dataclass
class Plant:
    hub: Hub
    simulator: BottlingLineSimulator
    data_dir: Path
    endpoint: str
    namespace: int

    def node(self, identifier: str) -> str:
        return f"ns={self.namespace};s={identifier}"


def _settings(data_dir: Path) -> HubSettings:
    settings = load_settings(demo_settings_path())
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "rest": settings.rest.model_copy(update={"port": 0}),
            "opcua": settings.opcua.model_copy(update={"port": 0, "trust_all_client_certificates": False}),
            "simulator": settings.simulator.model_copy(update={"port": 0}),
        }
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plant(
    tmp_path_factory: pytest.TempPathFactory, opcua_client_certificate: ClientCertificate, node_opcua: NodeOpcua
) -> AsyncIterator[Plant]:
    data_dir = tmp_path_factory.mktemp("plant-node-opcua")
    trust_client_certificate(data_dir, opcua_client_certificate)
    async with Hub(_settings(data_dir)) as hub:
        assert hub.simulator is not None
        assert hub.opcua is not None
        hub.simulator.pause()
        yield Plant(hub, hub.simulator, data_dir, hub.opcua.endpoint_url, hub.opcua.namespace_index)


def _plan(
    plant: Plant,
    certificate: ClientCertificate,
    pki: Path,
    user: dict[str, str] | None,
    steps: list[dict[str, Any]],
    *,
    policy: str = "Basic256Sha256",
    mode: str = "SignAndEncrypt",
) -> dict[str, Any]:
    return {
        "endpoint": plant.endpoint,
        "securityPolicy": policy,
        "securityMode": mode,
        "applicationUri": CLIENT_URI,
        "certificateFile": str(certificate.certificate),
        "privateKeyFile": str(certificate.private_key),
        "pkiDir": str(pki),
        "user": user,
        "steps": steps,
    }


def _tag_path(submodel_id: str, id_short: str) -> str:
    escaped = submodel_id.replace("&", "&&").replace(":", "&:").replace("/", "&/").replace(".", "&.")
    return f"/2:AASEnvironment/2:Submodels/2:{escaped}/2:{id_short}"


async def test_the_operator_browses_translates_reads_writes_the_plc_and_subscribes(
    plant: Plant, node_opcua: NodeOpcua, opcua_client_certificate: ClientCertificate, tmp_path: Path
) -> None:
    set_point = plant.node(node_id_for(FILLER, "FillVolumeSetpoint"))
    temperature = plant.node(node_id_for(SENSOR, "Temperature"))
    plan = _plan(
        plant,
        opcua_client_certificate,
        tmp_path / "pki",
        OPERATOR,
        [
            {"op": "getEndpoints"},
            {"op": "browse", "nodeId": plant.node(SUBMODELS_FOLDER)},
            {"op": "translate", "start": "ObjectsFolder", "path": _tag_path(FILLER, "FillVolumeSetpoint")},
            {"op": "write", "nodeId": set_point, "dataType": "Double", "value": 487.5},
            {"op": "read", "nodeId": set_point},
            {"op": "subscribe", "nodeId": temperature, "until": 26.4, "timeoutMs": 10000},
        ],
    )
    async with node_opcua.start("session", plan) as script:
        await script.wait_for("subscribed")
        plant.simulator.server.set_registers(Table.HOLDING_REGISTER, 20, [264])  # int16, scale 0.1 -> 26.4 °C
        outcome = await script.result()
    assert outcome["error"] is None, outcome
    endpoints, browsed, translated, written, read, subscribed = outcome["steps"]
    assert endpoints["endpoints"], outcome
    assert all(mode != "None" for _, mode in endpoints["endpoints"])
    assert all(policy != "None" for policy, _ in endpoints["endpoints"])
    assert browsed["status"] == "Good"
    assert f"2:{FILLER}" in {reference["browseName"] for reference in browsed["references"]}
    assert plant.node(submodel_node_id(FILLER)) in {reference["nodeId"] for reference in browsed["references"]}
    assert translated == {"op": "translate", "status": "Good", "targets": [set_point]}
    assert written["status"] == "Good"
    assert plant.simulator.read_point("filler.FillVolumeSetpoint") == pytest.approx(487.5)
    assert list(plant.simulator.server.get_registers(Table.HOLDING_REGISTER, 32, 1)) == [4875]
    assert read["status"] == "Good"
    assert read["value"] == pytest.approx(487.5)
    assert subscribed["reached"] is True, subscribed
    assert subscribed["changes"][-1]["value"] == pytest.approx(26.4)
    assert subscribed["changes"][-1]["status"] == "Good"


async def test_the_viewer_reads_but_may_not_write_and_neither_may_anonymous(
    plant: Plant, node_opcua: NodeOpcua, opcua_client_certificate: ClientCertificate, tmp_path: Path
) -> None:
    set_point = plant.node(node_id_for(FILLER, "FillVolumeSetpoint"))
    before = plant.simulator.read_point("filler.FillVolumeSetpoint")
    for user in (VIEWER, None):
        steps = [
            {"op": "browse", "nodeId": plant.node(submodel_node_id(FILLER))},
            {"op": "read", "nodeId": set_point},
            {"op": "write", "nodeId": set_point, "dataType": "Double", "value": before + 11.0},
        ]
        outcome = await node_opcua.run("session", _plan(plant, opcua_client_certificate, tmp_path / "pki", user, steps))
        assert outcome["session"] is True, outcome
        browsed, read, written = outcome["steps"]
        assert browsed["status"] == "Good"
        assert "2:FillVolumeSetpoint" in {reference["browseName"] for reference in browsed["references"]}
        assert read["status"] == "Good"
        assert read["value"] == pytest.approx(before)
        assert written["status"] == "BadUserAccessDenied", (user, outcome)
    assert plant.simulator.read_point("filler.FillVolumeSetpoint") == pytest.approx(before)


async def test_security_policy_none_may_only_discover(
    plant: Plant, node_opcua: NodeOpcua, opcua_client_certificate: ClientCertificate, tmp_path: Path
) -> None:
    set_point = plant.node(node_id_for(FILLER, "FillVolumeSetpoint"))
    before = plant.simulator.read_point("filler.FillVolumeSetpoint")
    for user in (OPERATOR, None):
        steps = [
            {"op": "getEndpoints"},
            {"op": "write", "nodeId": set_point, "dataType": "Double", "value": before + 7.0},
        ]
        plan = _plan(plant, opcua_client_certificate, tmp_path / "pki", user, steps, policy="None", mode="None")
        plan["pretendNoneEndpoint"] = True
        outcome = await node_opcua.run("session", plan)
        assert outcome["connected"] is True, outcome
        (endpoints,) = outcome["steps"]
        assert endpoints["endpoints"]
        assert all(mode != "None" for _, mode in endpoints["endpoints"])
        assert outcome["session"] is False, outcome
        assert outcome["error"] == "BadSecurityPolicyRejected", outcome
    assert plant.simulator.read_point("filler.FillVolumeSetpoint") == pytest.approx(before)


async def test_a_user_name_over_a_sign_only_channel_is_never_sent_in_clear(
    plant: Plant, node_opcua: NodeOpcua, opcua_client_certificate: ClientCertificate, tmp_path: Path
) -> None:
    """node-opcua encrypts the password with the server certificate on a Sign channel: accepted, and it may write."""
    set_point = plant.node(node_id_for(FILLER, "FillVolumeSetpoint"))
    steps = [{"op": "write", "nodeId": set_point, "dataType": "Double", "value": 333.5}]
    plan = _plan(plant, opcua_client_certificate, tmp_path / "pki", OPERATOR, steps, mode="Sign")
    outcome = await node_opcua.run("session", plan)
    assert outcome["session"] is True, outcome
    assert outcome["steps"] == [{"op": "write", "status": "Good"}]
    assert plant.simulator.read_point("filler.FillVolumeSetpoint") == pytest.approx(333.5)


async def test_an_untrusted_certificate_is_rejected_and_kept_for_review(
    plant: Plant, node_opcua: NodeOpcua, tmp_path: Path
) -> None:
    (tmp_path / "stranger").mkdir()
    stranger = make_client_certificate(tmp_path / "stranger")
    set_point = plant.node(node_id_for(FILLER, "FillVolumeSetpoint"))
    before = plant.simulator.read_point("filler.FillVolumeSetpoint")
    steps = [{"op": "write", "nodeId": set_point, "dataType": "Double", "value": before + 3.0}]
    outcome = await node_opcua.run("session", _plan(plant, stranger, tmp_path / "pki", OPERATOR, steps))
    assert outcome["session"] is False, outcome
    assert outcome["error"] == "BadCertificateUntrusted", outcome
    assert outcome["steps"] == []
    rejected = plant.data_dir / "pki" / "rejected"
    assert any(path.read_bytes() == stranger.certificate.read_bytes() for path in rejected.iterdir())
    assert plant.simulator.read_point("filler.FillVolumeSetpoint") == pytest.approx(before)

"""The process shell's ``Simulate`` Method over OPC UA: a job for an operator with the ``simulate`` right,
``BadInvalidArgument`` naming the parameter path for bad input, ``BadUserAccessDenied`` without the right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.common.node import Node
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from basyx.aas import model

from aas_server.config import AccessRule, HubSettings
from aas_server.opcua.node_ids import shell_node_id
from aas_server.opcua.simulations import simulate_node_id
from aas_server.runtime.hub import Hub
from aas_server.simulation.jobs import JobView
from tests.support import ClientCertificate, eventually
from tests.test_end_to_end import opcua_node, opcua_session
from tests.test_simulation_rest import PROCESS, simulation_settings


def with_opcua(settings: HubSettings, operator_may_simulate: bool = True) -> HubSettings:
    rules = [AccessRule(roles=["read-only", "operator"], operations=["read"])]  # type: ignore[list-item]
    operations = ["write-value", "simulate"] if operator_may_simulate else ["write-value"]
    rules.append(AccessRule(roles=["operator"], operations=operations, shells=[PROCESS]))  # type: ignore[arg-type]
    return settings.model_copy(
        update={
            "opcua": settings.opcua.model_copy(update={"enabled": True}),
            "security": settings.security.model_copy(update={"rules": rules}),
        }
    )


async def simulate(client: Client, namespace: int, scenario: str) -> ua.CallMethodResult:
    """The raw result of ``Simulate`` on the process shell (status, output and diagnostic info)."""
    request = ua.CallMethodRequest()
    request.ObjectId = opcua_node(client, shell_node_id(PROCESS), namespace).nodeid
    request.MethodId = opcua_node(client, simulate_node_id(PROCESS), namespace).nodeid
    request.InputArguments = [ua.Variant(scenario, ua.VariantType.String)]
    (result,) = await client.uaclient.call([request])
    return result


async def test_an_operator_simulates_the_process_over_opc_ua_and_bad_input_names_the_path(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    async with Hub(with_opcua(simulation_settings(tmp_path / "data"))) as hub:
        projection = hub.opcua
        assert projection is not None
        namespace = projection.namespace_index
        url = projection.endpoint_url
        async with opcua_session(url, opcua_client_certificate, "operator", "demo-operator") as client:
            shell = opcua_node(client, shell_node_id(PROCESS), namespace)
            method: Node = opcua_node(client, simulate_node_id(PROCESS), namespace)
            assert (await method.read_browse_name()).Name == "Simulate"
            job_id = await shell.call_method(method.nodeid, '{"name": "via OPC UA", "horizon": 600, "replications": 2}')
            assert isinstance(job_id, str)
            done: JobView = await eventually(lambda: _job(hub, job_id), lambda view: view.state.finished, within=60.0)
            assert done.state.value == "done", done.error
            assert done.user == "operator"
            assert done.results[0].estimates["throughput"].mean > 0

            bad = await simulate(client, namespace, '{"overrides": {"stations[Filler].speed_factor": -1}}')
            assert bad.StatusCode.value == StatusCodes.BadInvalidArgument
            assert "stations[0].speed_factor: must be > 0" in bad.InputArgumentDiagnosticInfos[0].AdditionalInfo
            missing = await simulate(client, namespace, '{"overrides": {"buffers[3].capacity": 5}}')
            assert missing.StatusCode.value == StatusCodes.BadInvalidArgument
            assert "buffers[3].capacity: no such parameter" in missing.InputArgumentDiagnosticInfos[0].AdditionalInfo
            not_json = await simulate(client, namespace, "horizon=600")
            assert not_json.StatusCode.value == StatusCodes.BadInvalidArgument
        async with opcua_session(url, opcua_client_certificate, "viewer", "demo-viewer") as client:
            shell = opcua_node(client, shell_node_id(PROCESS), namespace)
            with pytest.raises(UaStatusCodeError) as raised:
                await shell.call_method(opcua_node(client, simulate_node_id(PROCESS), namespace).nodeid, "{}")
            assert raised.value.code == StatusCodes.BadUserAccessDenied
        assert len(hub.simulations.jobs()) == 1, "only the operator's good scenario became a job"


async def _job(hub: Hub, job_id: str) -> JobView:
    return hub.simulations.job(job_id)


async def test_an_operator_without_the_simulate_right_is_refused(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    settings = with_opcua(simulation_settings(tmp_path / "data"), operator_may_simulate=False)
    async with Hub(settings) as hub:
        projection = hub.opcua
        assert projection is not None
        namespace = projection.namespace_index
        async with opcua_session(
            projection.endpoint_url, opcua_client_certificate, "operator", "demo-operator"
        ) as client:
            result: Any = await simulate(client, namespace, '{"horizon": 60}')
            assert result.StatusCode.value == StatusCodes.BadUserAccessDenied
        assert hub.simulations.jobs() == []


async def test_a_process_shell_created_while_running_gets_simulate(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    async with Hub(with_opcua(simulation_settings(tmp_path / "data"))) as hub:
        projection = hub.opcua
        assert projection is not None
        namespace = projection.namespace_index
        shell_id = "urn:aas-server:test:aas:second-process"
        shell = model.AssetAdministrationShell(
            model.AssetInformation(global_asset_id="urn:aas-server:test:asset:second-process"),
            shell_id,
            id_short="SecondProcess",
            extension=[model.Extension("CompositionLevel", str, "process")],
        )
        async with opcua_session(projection.endpoint_url, opcua_client_certificate, "operator", "demo-operator") as c:
            method = opcua_node(c, simulate_node_id(shell_id), namespace)

            async def browse_name() -> str | None:
                try:
                    return str((await method.read_browse_name()).Name)
                except UaStatusCodeError:
                    return None

            assert await browse_name() is None
            await hub.store.create(shell)
            assert await eventually(browse_name, lambda name: name == "Simulate", within=5.0) == "Simulate"

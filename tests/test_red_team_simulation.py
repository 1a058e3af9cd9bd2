"""Red team of the what-if simulations (issue 14) on a real hub on loopback: an attacker with and without the
``simulate`` right, a SCADA engineer over OPC UA, and an integrator exporting and re-importing the results.

Each test is a finding (``docs/security.md``, rows S3...): it failed before its fix."""

from __future__ import annotations

import hashlib
import multiprocessing
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
from asyncua import ua

from aas_server.config import AccessRule, ApiKeySettings
from aas_server.exchange.package import read_package
from aas_server.opcua.node_ids import node_id_for, shell_node_id, submodel_node_id
from aas_server.opcua.simulations import simulate_node_id
from aas_server.runtime.hub import Hub
from aas_server.simulation.jobs import JobView
from aas_server.simulation.submodel import line_from_submodel
from tests.conformance.dataset import environment_json, file_check_failures
from tests.node_opcua import NodeOpcua
from tests.support import CLIENT_URI, ClientCertificate, eventually, value_of
from tests.test_end_to_end import opcua_node, opcua_session
from tests.test_simulation_opcua import with_opcua
from tests.test_simulation_rest import (
    OPERATOR,
    PROCESS,
    VIEWER,
    _b64,
    finished,
    job_state,
    origin_of,
    post,
    simulation_settings,
)


async def test_a_scenario_that_would_never_end_is_refused_and_cannot_hold_the_workers(tmp_path: Path) -> None:
    """A cycle of 1e-300 s (or a speed factor of 1e300) once made a replication that never ended: a cancel could
    not stop it (replications stop only between them), so the workers stayed busy and every later job hung."""
    settings = simulation_settings(tmp_path / "data", max_jobs=4, max_events=200_000)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/simulations"
        runaway = {"stations[Filler].speed_factor": 1e300}
        status, body, _ = await post(http, url, {"shell": PROCESS, "horizon": 600, "overrides": runaway})
        assert status == 400, body
        text = body["messages"][0]["text"]
        assert text.startswith("stations[0].cycle_time: "), text
        assert "more than the 200000 events a replication may simulate" in text
        status, body, _ = await post(
            http,
            url,
            {"shell": PROCESS, "overrides": {"arrivals": {"interarrival": {"kind": "constant", "value": 1e-9}}}},
        )
        assert status == 400, body
        assert body["messages"][0]["text"].startswith("arrivals.interarrival: "), body

        # a gamma of shape 1e-9 passes the check on the means (0.3 s) but draws almost only 0 s cycles: the
        # replication stops at the bound and the job fails with the reason, instead of running on for ever
        gamma = {"kind": "gamma", "shape": 1e-9, "scale": 3e8}
        heavy = {"stations[Filler].cycle_time": gamma, "stations[Capper].cycle_time": gamma}
        started = time.monotonic()
        status, body, location = await post(
            http, url, {"shell": PROCESS, "horizon": 600, "replications": 2, "overrides": heavy}
        )
        assert status == 202, body
        job = await finished(http, origin_of(url, location), within=60.0)
        assert job["state"] == "failed", job
        assert "more than the 200000 events a replication may simulate" in job["error"]
        assert time.monotonic() - started < 60

        # the workers are free: an ordinary job runs to its end
        status, body, location = await post(http, url, {"shell": PROCESS, "horizon": 600, "replications": 2})
        assert status == 202, body
        assert (await finished(http, origin_of(url, location), within=60.0))["state"] == "done"


def _export_rules(settings: Any) -> Any:
    rules = [*settings.security.rules, AccessRule(roles=["operator"], operations=["export"])]  # type: ignore[list-item]
    return settings.model_copy(update={"security": settings.security.model_copy(update={"rules": rules})})


async def test_names_that_aas_cannot_hold_are_refused_and_cannot_brick_the_export(tmp_path: Path) -> None:
    """A scenario name with NUL, or a station renamed with ESC, went into the results submodel (``Name``,
    ``Bottleneck``) and made every XML or AASX export holding it a 500 (AASd-130)."""
    async with Hub(_export_rules(simulation_settings(tmp_path / "data"))) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/simulations"
        short = {"shell": PROCESS, "horizon": 60, "replications": 1}
        cases: list[tuple[dict[str, Any], str]] = [
            ({"name": "\x00evil"}, "name: "),
            ({"overrides": {"stations[Filler].name": "F\x1bx"}}, "stations[0].name: "),
            ({"overrides": {"name": "line\x07"}}, "name: "),
        ]
        for scenario, where in cases:
            status, body, _ = await post(http, url, {**short, **scenario})
            assert status == 400, (scenario, body)
            text = body["messages"][0]["text"]
            assert text.startswith(where), (scenario, text)
            assert "AASd-130" in text, (scenario, text)
        assert hub.simulations.jobs() == []

        status, body, location = await post(http, url, {**short, "name": "tab\tand ünïcode"})
        assert status == 202, body
        job = await finished(http, origin_of(url, location))
        assert job["state"] == "done", job
        (results_id,) = job["resultsSubmodels"]
        query = f"{hub.rest_url}/serialization?submodelIds={_b64(results_id)}&includeConceptDescriptions=false"
        async with http.get(query, headers={**OPERATOR, "Accept": "application/xml"}) as response:
            assert response.status == 200, await response.text()
            assert "tab\tand ünïcode" in await response.text()


async def test_station_names_that_give_the_same_id_short_still_give_results(tmp_path: Path) -> None:
    """Stations renamed ``A b`` and ``A_b`` ran every replication, then the job failed writing its results (two
    collections ``A_b``: AASd-022) with a traceback in the log; now the second is ``A_b_2``."""
    async with Hub(simulation_settings(tmp_path / "data")) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/simulations"
        names = {"stations[Filler].name": "A b", "stations[Capper].name": "A_b"}
        body = {"shell": PROCESS, "horizon": 60, "replications": 1, "overrides": names}
        status, job, location = await post(http, url, body)
        assert status == 202, job
        job = await finished(http, origin_of(url, location))
        assert job["state"] == "done", job
        assert set(job["results"][0]["stations"]) == {"A b", "A_b"}
        (results_id,) = job["resultsSubmodels"]
        async with http.get(f"{hub.rest_url}/submodels/{_b64(results_id)}/$value", headers=OPERATOR) as response:
            assert response.status == 200
            value = await response.json()
        assert set(value["Result"]["Stations"]) == {"A_b", "A_b_2"}


async def test_a_simulation_never_replaces_a_submodel_it_did_not_write(tmp_path: Path) -> None:
    """A submodel someone created at ``<process shell>/simulation-models`` (not the shell's, no Simulation Models
    semanticId) was silently replaced by the line at the next job: a simulation overwrote a live submodel."""
    settings = simulation_settings(tmp_path / "data")
    rules = [*settings.security.rules, AccessRule(roles=["operator"], operations=["create"])]  # type: ignore[list-item]
    settings = settings.model_copy(update={"security": settings.security.model_copy(update={"rules": rules})})
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        squatted = f"{PROCESS}/simulation-models"
        live = {
            "modelType": "Submodel",
            "id": squatted,
            "idShort": "LiveReadings",
            "submodelElements": [
                {"modelType": "Property", "idShort": "Pressure", "valueType": "xs:double", "value": "4.2"}
            ],
        }
        async with http.post(f"{hub.rest_url}/submodels", json=live, headers=OPERATOR) as response:
            assert response.status == 201, await response.text()
        status, body, _ = await post(
            http, f"{hub.rest_url}/simulations", {"shell": PROCESS, "horizon": 60, "replications": 1}
        )
        assert status == 409, body
        assert squatted in body["messages"][0]["text"]
        kept = hub.store.submodel(squatted)
        assert kept.id_short == "LiveReadings"
        assert kept.get_referable("Pressure").value == 4.2  # type: ignore[attr-defined]
        assert hub.simulations.jobs() == []
        assert not any(reference.key[-1].value == squatted for reference in hub.store.shell(PROCESS).submodel)


async def test_a_job_cannot_hold_a_large_body_so_kept_jobs_bound_the_memory(tmp_path: Path) -> None:
    """A scenario of 10 MiB (2.4 million empirical values, or a million-character parameter path) was kept with
    its job, its line and its results submodel: about 150 MB of hub memory per job, times ``kept_jobs`` (100)."""
    async with Hub(simulation_settings(tmp_path / "data")) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/simulations"
        short = {"shell": PROCESS, "horizon": 60, "replications": 1}
        many = {"kind": "empirical", "values": [0.3] * 10_001}
        station = {"name": "S", "cycle_time": {"kind": "constant", "value": 1e6}}
        stations = [{**station, "name": f"S{index}"} for index in range(101)]
        buffers = [{"capacity": 1}] * 100
        long_path = "stations[" + "0" * 1_000_000 + "].speed_factor"
        cases: list[tuple[dict[str, Any], str]] = [
            ({"overrides": {"stations[Filler].cycle_time": many}}, "stations[0].cycle_time.values: "),
            ({"overrides": {"stations": stations, "buffers": buffers}}, "stations: "),
            ({"overrides": {f"stations[{'0' * n}].speed_factor": 1.0 for n in range(1, 1002)}}, "overrides: "),
            ({"overrides": {long_path: 1.1}}, "overrides: "),
        ]
        for scenario, where in cases:
            status, body, _ = await post(http, url, {**short, **scenario})
            assert status == 400, (where, body)
            text = body["messages"][0]["text"]
            assert text.startswith(where), text
            assert len(text) < 1000, "the message does not echo the body"
        assert hub.simulations.jobs() == []
        # within the bounds a job runs as ever
        status, body, location = await post(
            http, url, {**short, "overrides": {"stations[Filler].cycle_time": {**many, "values": [0.3] * 10_000}}}
        )
        assert status == 202, body
        assert (await finished(http, origin_of(url, location)))["state"] == "done"


async def test_a_caller_cannot_cancel_a_job_another_user_started(tmp_path: Path) -> None:
    """Every caller allowed to simulate on the shell could cancel any job there, so one engineer could stop
    another's long run; now only its starter (or a role that may simulate everywhere) may."""
    settings = simulation_settings(tmp_path / "data", max_jobs=2)
    second = "operator-2-" + secrets.token_hex(8)
    key = ApiKeySettings(name="bob", roles=["operator"], sha256=hashlib.sha256(second.encode()).hexdigest())
    api_keys = [*settings.security.api_keys, key]
    settings = settings.model_copy(update={"security": settings.security.model_copy(update={"api_keys": api_keys})})
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/simulations"
        status, body, location = await post(http, url, {"shell": PROCESS, "horizon": 8 * 3600, "replications": 40})
        assert status == 202, body
        job_url = origin_of(url, location)
        async with http.delete(job_url, headers={"X-API-Key": second}) as response:
            assert response.status == 403, await response.text()
            text = (await response.json())["messages"][0]["text"]
        assert "demo-operator" in text
        assert hub.simulations.job(body["id"]).state.value in ("queued", "running")
        async with http.get(job_url, headers={"X-API-Key": second}) as response:
            assert response.status == 200, "reading a job on a shell one may simulate stays allowed"
        async with http.delete(job_url, headers=OPERATOR) as response:
            assert response.status == 200
            assert (await response.json())["state"] == "cancelled"


async def test_the_simulate_method_is_user_executable_only_for_who_may_simulate(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    """A SCADA client shows a Method as callable by its ``UserExecutable``: it said True to a viewer and to an
    operator without the ``simulate`` right, whose calls are then refused (``BadUserAccessDenied``)."""
    for operator_may_simulate in (True, False):
        settings = with_opcua(simulation_settings(tmp_path / f"data-{operator_may_simulate}"), operator_may_simulate)
        async with Hub(settings) as hub:
            projection = hub.opcua
            assert projection is not None
            for user, password, expected in (
                ("operator", "demo-operator", operator_may_simulate),
                ("viewer", "demo-viewer", False),
            ):
                async with opcua_session(projection.endpoint_url, opcua_client_certificate, user, password) as client:
                    method = opcua_node(client, simulate_node_id(PROCESS), projection.namespace_index)
                    executable = value_of(await method.read_attribute(ua.AttributeIds.UserExecutable))
                    assert executable is expected, (user, operator_may_simulate)
                    assert value_of(await method.read_attribute(ua.AttributeIds.Executable)) is True


async def test_node_opcua_browses_reads_and_calls_simulate_as_asyncua_does(
    tmp_path: Path, opcua_client_certificate: ClientCertificate, node_opcua: NodeOpcua
) -> None:
    """The SCADA engineer's independent stack: the Method, its argument properties and a call, as node-opcua sees
    them (a malformed Argument structure or an unexpected status would show here first)."""
    data_dir = tmp_path / "data"
    async with Hub(with_opcua(simulation_settings(data_dir))) as hub:
        projection = hub.opcua
        assert projection is not None

        def node(identifier: str) -> str:
            return f"ns={projection.namespace_index};s={identifier}"

        shell, method = node(shell_node_id(PROCESS)), node(simulate_node_id(PROCESS))

        def plan(user: dict[str, str], steps: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "endpoint": projection.endpoint_url,
                "securityPolicy": "Basic256Sha256",
                "securityMode": "SignAndEncrypt",
                "applicationUri": CLIENT_URI,
                "certificateFile": str(opcua_client_certificate.certificate),
                "privateKeyFile": str(opcua_client_certificate.private_key),
                "pkiDir": str(tmp_path / "pki"),
                "user": user,
                "steps": steps,
            }

        def call(scenario: Any, data_type: str = "String") -> dict[str, Any]:
            arguments = [{"dataType": data_type, "value": scenario}]
            return {"op": "call", "objectId": shell, "methodId": method, "inputArguments": arguments}

        operator = {"name": "operator", "password": "demo-operator"}
        steps = [
            {"op": "browse", "nodeId": shell},
            {"op": "browse", "nodeId": method},
            {"op": "read", "nodeId": method, "attribute": "UserExecutable"},
            call('{"name": "node-opcua", "horizon": 60, "replications": 1}'),
            call('{"overrides": {"stations[Filler].speed_factor": -1}}'),
            call(7, "Int32"),
        ]
        outcome = await node_opcua.run("session", plan(operator, steps))
        assert outcome["error"] is None, outcome
        browsed, children, executable, good, bad, wrong_type = outcome["steps"]
        assert {"browseName": "2:Simulate", "nodeId": method, "displayName": "Simulate"} in browsed["references"]
        names = {reference["browseName"] for reference in children["references"]}
        assert {"InputArguments", "OutputArguments"} <= names, children
        assert executable["value"] is True
        assert good["status"] == "Good", good
        (job_id,) = good["outputs"]
        assert hub.simulations.job(job_id).user == "operator"
        assert bad["status"] == "BadInvalidArgument"
        assert "stations[0].speed_factor: must be > 0" in bad["diagnostics"][0]
        assert wrong_type["status"] == "BadInvalidArgument"

        # the results submodel the job wrote is browsable and readable, bounds of one replication included
        done = await eventually(lambda: _view(hub, job_id), lambda view: view.state.finished, within=60.0)
        assert done.state.value == "done", done.error
        (results_id,) = done.results_submodels
        line = "Result.Line.Throughput"
        steps = [
            {"op": "browse", "nodeId": node(submodel_node_id(results_id))},
            {"op": "read", "nodeId": node(node_id_for(results_id, f"{line}.Mean"))},
            {"op": "read", "nodeId": node(node_id_for(results_id, f"{line}.Low"))},
        ]
        outcome = await node_opcua.run("session", plan(operator, steps))
        assert outcome["error"] is None, outcome
        browsed, mean, low = outcome["steps"]
        assert browsed["status"] == "Good"
        assert {"Job", "Result"} <= {reference["displayName"] for reference in browsed["references"]}, browsed
        assert mean["status"] == "Good"
        assert mean["value"] == done.results[0].estimates["throughput"].mean
        # one replication has no bound: a Property without value, which OPC UA shows as docs/opcua.md says
        assert low["status"] == "BadWaitingForInitialData", low

        viewer = {"name": "viewer", "password": "demo-viewer"}
        steps = [{"op": "read", "nodeId": method, "attribute": "UserExecutable"}, call("{}")]
        outcome = await node_opcua.run("session", plan(viewer, steps))
        executable, refused = outcome["steps"]
        assert executable["value"] is False
        assert refused["status"] == "BadUserAccessDenied"
        assert len(hub.simulations.jobs()) == 1


async def test_results_and_the_simulation_model_go_out_and_come_back_in_every_export_format(tmp_path: Path) -> None:
    """The integrator's view: the IDTA 02005 Simulation Models submodel and the results submodels of a job and of a
    comparison, downloaded as AASX, XML and JSON, read back by the hub's importer without repairs, pass the test
    engine's file check, and the line read back is the line the hub simulates."""
    async with Hub(_export_rules(simulation_settings(tmp_path / "data"))) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/simulations"
        status, body, location = await post(http, url, {"shell": PROCESS, "horizon": 600, "replications": 1})
        assert status == 202, body
        single = await finished(http, origin_of(url, location))
        scenarios = {
            "shell": PROCESS,
            "baseline": {"horizon": 600, "replications": 3},
            "candidate": {"horizon": 600, "replications": 3, "overrides": {"buffers[0].capacity": 5}},
        }
        status, body, location = await post(http, f"{url}/$compare", scenarios)
        assert status == 202, body
        compared = await finished(http, origin_of(url, location))
        models_id = f"{PROCESS}/simulation-models"
        ids = [models_id, *single["resultsSubmodels"], *compared["resultsSubmodels"]]
        query = "&".join(f"submodelIds={_b64(each)}" for each in ids) + f"&aasIds={_b64(PROCESS)}"
        line, _ = await hub.simulations.base_line(PROCESS)
        for accept, name in (
            ("application/asset-administration-shell-package+xml", "out.aasx"),
            ("application/xml", "out.xml"),
            ("application/json", "out.json"),
        ):
            async with http.get(f"{hub.rest_url}/serialization?{query}", headers={**OPERATOR, "Accept": accept}) as r:
                assert r.status == 200, await r.text()
                data = await r.read()
            imported = read_package(data, name, strict=True)
            assert not imported.report.repairs, (name, imported.report)
            back = {each.id: each for each in imported.identifiables}
            assert set(ids) <= set(back), name
            assert line_from_submodel(back[models_id]) == line, name  # type: ignore[arg-type]
            submodels = [back[each] for each in ids]
            assert file_check_failures(environment_json(submodels)) == [], name
            comparison = back[compared["resultsSubmodels"][0]].get_referable("Comparison")  # type: ignore[attr-defined]
            assert comparison.get_referable("Throughput").get_referable("Significant").value in (True, False)


async def test_the_time_series_of_a_long_line_cannot_fill_the_hubs_memory(tmp_path: Path) -> None:
    """10,000 intervals were allowed per series whatever the line: a line of many stations with a short
    ``series_interval`` recorded a buffer-level series per buffer, and one job of 10 replications of 1,000
    stations took the hub from 0.2 to 5 GB. Now a replication records at most 20,000 series values in all."""
    async with Hub(simulation_settings(tmp_path / "data")) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/simulations"
        stations = [{"name": f"S{index}", "cycle_time": {"kind": "constant", "value": 1e5}} for index in range(100)]
        line = {"stations": stations, "buffers": [{"capacity": 1}] * 99}
        body = {"shell": PROCESS, "horizon": 28800, "replications": 2, "overrides": line}
        status, answer, _ = await post(http, url, {**body, "series_interval": 2.88})
        assert status == 400, answer
        assert answer["messages"][0]["text"] == "series_interval: must be >= 144 (at most 200 intervals)"
        assert hub.simulations.jobs() == []
        status, answer, location = await post(http, url, {**body, "series_interval": 144})
        assert status == 202, answer
        job = await finished(http, origin_of(url, location))
        assert job["state"] == "done", job
        assert len(job["results"][0]["series"]["times"]) == 200
        assert len(job["results"][0]["series"]["buffers.S0->S1.level"]) == 200
        # the job table keeps the mean series, not every replication's
        assert all(not each.series for each in hub.simulations.job(job["id"]).results[0].replications)
        # the demo's two stations keep their 10,000 intervals
        status, answer, _ = await post(http, url, {"shell": PROCESS, "horizon": 28800, "series_interval": 2.88})
        assert status == 202, answer


async def _view(hub: Hub, job_id: str) -> JobView:
    return hub.simulations.job(job_id)


async def test_the_simulate_arguments_carry_their_locale_like_every_text_of_the_hub(
    tmp_path: Path, opcua_client_certificate: ClientCertificate
) -> None:
    """The Method's display names said ``en`` but its arguments' descriptions had no locale, so a SCADA client
    that picks texts by locale showed none."""
    async with Hub(with_opcua(simulation_settings(tmp_path / "data"))) as hub:
        projection = hub.opcua
        assert projection is not None
        async with opcua_session(
            projection.endpoint_url, opcua_client_certificate, "operator", "demo-operator"
        ) as client:
            method = opcua_node(client, simulate_node_id(PROCESS), projection.namespace_index)
            for child in await method.get_children():
                (argument,) = await child.read_value()
                assert argument.Description.Locale == "en", (argument.Name, argument.Description)
                assert argument.Description.Text


async def test_the_hub_stops_promptly_while_a_long_replication_runs(tmp_path: Path) -> None:
    """Stopping the hub waited for every replication already in a worker to end: with a long one (here about a
    minute and a half, up to ``max_events`` in general) ``systemctl stop`` hung and ran into its kill timeout."""
    settings = simulation_settings(tmp_path / "data", workers=1)
    fast = {"stations[Filler].speed_factor": 30, "stations[Capper].speed_factor": 30}
    body = {"shell": PROCESS, "horizon": 8 * 3600, "replications": 2, "overrides": fast}
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        status, answer, location = await post(http, f"{hub.rest_url}/simulations", body)
        assert status == 202, answer
        await eventually(
            lambda: job_state(http, origin_of(hub.rest_url or "", location)), lambda job: job["state"] == "running"
        )
        workers = [child for child in multiprocessing.active_children() if "SpawnProcess" in child.name]
        assert workers, "the job's worker runs"
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 15
    assert not any(worker.is_alive() for worker in workers)


async def test_what_the_attacker_tried_and_was_already_refused(tmp_path: Path) -> None:
    """Paths outside the line, values JSON cannot hold, bodies that are no object, comparisons of jobs that are not
    done, and a role without ``simulate``: each a 4xx naming the place, and no job (kept as a regression net)."""
    settings = simulation_settings(tmp_path / "data", max_jobs=1)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/simulations"
        for path, reason in (
            ("__class__", "__class__: no such parameter"),
            ("stations[Filler].__dict__", "stations[Filler].__dict__: no such parameter"),
            ("../submodels", "../submodels: not a parameter path"),
            ("stations[../x].speed_factor", "stations[../x].speed_factor: not a parameter path"),
            ("OperationalData.Speed", "OperationalData.Speed: no such parameter"),
        ):
            status, body, _ = await post(http, url, {"shell": PROCESS, "overrides": {path: 1.0}})
            assert (status, body["messages"][0]["text"]) == (400, reason)
        for raw, reason in (
            (b"[1, 2]", "the body must be a JSON object"),
            (b'{"shell": "x", "horizon": NaN}', "malformed JSON body"),
            (b'{"shell": "x", "horizon": Infinity}', "malformed JSON body"),
            (b'{"shell": "x", "overrides": ' + b"[" * 2000 + b"]" * 2000 + b"}", "malformed JSON body"),
        ):
            headers = {**OPERATOR, "Content-Type": "application/json"}
            async with http.post(url, data=raw, headers=headers) as response:
                assert response.status == 400, raw[:40]
                assert (await response.json())["messages"][0]["text"].startswith(reason)
        status, body, location = await post(http, url, {"shell": PROCESS, "horizon": 8 * 3600, "replications": 40})
        assert status == 202, body
        running = body["id"]
        status, body, _ = await post(http, f"{url}/$compare", {"baseline": running, "candidate": running})
        assert status == 400
        assert "is running" in body["messages"][0]["text"] or "is queued" in body["messages"][0]["text"]
        status, body, _ = await post(http, f"{url}/$compare", {"baseline": "unknown", "candidate": running})
        assert status == 404
        async with http.delete(origin_of(url, location), headers=OPERATOR) as response:
            assert (await response.json())["state"] == "cancelled"
        status, body, _ = await post(http, f"{url}/$compare", {"baseline": running, "candidate": running})
        assert status == 400
        assert "is cancelled" in body["messages"][0]["text"]
        async with http.get(url, headers=VIEWER) as response:
            assert response.status == 403, "a role without simulate lists no job"
        async with http.get(origin_of(url, location), headers=VIEWER) as response:
            assert response.status == 403
        assert [view.id for view in hub.simulations.jobs()] == [running]

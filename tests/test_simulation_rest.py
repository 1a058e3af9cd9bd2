"""What-if simulations of the demo's process twin over REST, on a real hub: jobs, results in the twin, the MQTT
event, cancelling, comparing, bad input with the parameter path, the job limit, and the ``simulate`` right."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from basyx.aas import model

from aas_server.config import AccessRule, ApiKeySettings, EventSettings, HubSettings, SimulationSettings
from aas_server.model.events import ValueChanged
from aas_server.runtime.hub import Hub
from aas_server.runtime.simulation import ResultsWriter
from aas_server.store.twin_store import ModelChanged
from tests.mqtt_broker import MosquittoBroker
from tests.support import eventually, wait_until
from tests.test_end_to_end import settings_for
from tests.test_events import subscribed

PROCESS = "urn:aas-server:demo:aas:bottling-process"
FILLER = "urn:aas-server:demo:aas:filler"
OPERATOR = {"X-API-Key": "demo-operator-key"}
VIEWER_KEY = "viewer-" + secrets.token_hex(8)
VIEWER = {"X-API-Key": VIEWER_KEY}


def simulation_settings(data_dir: Path, broker: MosquittoBroker | None = None, **limits: Any) -> HubSettings:
    """The demo hub with REST access control: operators may simulate the process shell only, viewers read."""
    base = settings_for(data_dir)
    viewer = ApiKeySettings(name="viewer", roles=["read-only"], sha256=hashlib.sha256(VIEWER_KEY.encode()).hexdigest())
    rules = [
        AccessRule(roles=["read-only", "operator"], operations=["read"]),  # type: ignore[list-item]
        AccessRule(roles=["operator"], operations=["simulate"], shells=[PROCESS]),  # type: ignore[list-item]
    ]
    update: dict[str, Any] = {
        "opcua": base.opcua.model_copy(update={"enabled": False}),
        "security": base.security.model_copy(
            update={"enabled": True, "api_keys": [*base.security.api_keys, viewer], "rules": rules}
        ),
        "simulation": SimulationSettings(
            **{"workers": 2, "max_jobs": 2, "max_horizon": 8 * 3600.0, "max_replications": 40, **limits}
        ),
    }
    if broker is not None:
        update["events"] = EventSettings(enabled=True, port=broker.port, repository_id="sim-" + secrets.token_hex(4))
    return base.model_copy(update=update)


async def post(http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] = OPERATOR) -> Any:
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json(), response.headers.get("Location")


async def job_state(http: aiohttp.ClientSession, location: str) -> dict[str, Any]:
    async with http.get(location, headers=OPERATOR) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def finished(http: aiohttp.ClientSession, location: str, within: float = 60.0) -> dict[str, Any]:
    body: dict[str, Any] = await eventually(
        lambda: job_state(http, location),
        lambda body: body["state"] in ("done", "failed", "cancelled"),
        within=within,
    )
    return body


def origin_of(base: str, location: str) -> str:
    return base.rsplit("/api/", 1)[0] + location


async def test_a_scenario_runs_as_a_job_writes_its_results_into_the_twin_and_announces_them(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    settings = simulation_settings(tmp_path / "data", mosquitto)
    repository = settings.events.repository_id
    with subscribed(mosquitto, f"aas-repository/{repository}/shells/+/simulations/#") as subscriber:
        async with Hub(settings) as hub, aiohttp.ClientSession() as http:
            assert hub.rest_url is not None
            url = hub.rest_url
            changes = hub.store.bus.subscribe("simulation-test", maxsize=100_000)
            scenario = {
                "shell": PROCESS,
                "name": "buffer 20",
                "overrides": {"buffers[0].capacity": 20, "stations[Filler].speed_factor": 1.1},
                "horizon": 3600,
                "replications": 6,
                "seed": 7,
            }
            status, body, location = await post(http, f"{url}/simulations", scenario)
            assert status == 202, body
            assert location == f"/api/v3.0/simulations/{body['id']}"
            assert body["state"] in ("queued", "running")
            job = await finished(http, origin_of(url, location))
            assert job["state"] == "done", job
            assert job["completedReplications"] == 6
            (result,) = job["results"]
            throughput = result["line"]["throughput"]
            assert throughput["count"] == 6
            assert throughput["low"] <= throughput["mean"] <= throughput["high"]
            assert 0 < result["line"]["oee"]["mean"] <= 1.2
            assert set(result["stations"]) == {"Filler", "Capper"}
            for figures in result["stations"].values():
                assert {"utilisation", "blocked", "starved", "down"} <= set(figures)
            assert set(result["buffers"]) == {"FillerToCapper"}
            assert result["bottleneck"] in ("Filler", "Capper")
            assert len(result["series"]["times"]) == len(result["series"]["throughput"]) > 1

            # the results are a submodel of the process shell, linked to the scenario and the model
            (results_id,) = job["resultsSubmodels"]
            assert any(reference.key[-1].value == results_id for reference in hub.store.shell(PROCESS).submodel)
            submodel = hub.store.submodel(results_id)
            line = submodel.get_referable("Result").get_referable("Line")  # type: ignore[attr-defined]
            assert line.get_referable("Throughput").get_referable("Mean").value == throughput["mean"]
            reference = (
                submodel.get_referable("Result").get_referable("Scenario").get_referable("SimulationModel")  # type: ignore[attr-defined]
            )
            assert isinstance(reference, model.ReferenceElement)
            assert reference.value is not None
            models_id = reference.value.key[-1].value
            assert models_id == f"{PROCESS}/simulation-models"
            async with http.get(f"{url}/submodels/{_b64(results_id)}/$value", headers=OPERATOR) as response:
                assert response.status == 200
                value = await response.json()
            assert value["Result"]["Scenario"]["Name"] == "buffer 20"

            await wait_until(
                lambda: any(event.topic.endswith(f"/simulations/{job['id']}/done") for event in subscriber.unique()),
                within=10.0,
                what="the job's MQTT event",
            )
            event = next(event for event in subscriber.unique() if event.topic.endswith("/done")).json()
            assert event["job"] == job["id"]
            assert event["resultsSubmodels"] == [results_id]
            assert event["throughput"] == [throughput["mean"]]

            # sandbox: the job changed only its own submodels and the process shell's references to them
            events = changes.get_nowait_all()
            changes.close()
            touched = {change.identifiable_id for change in events if isinstance(change, ModelChanged)}
            assert touched <= {PROCESS, models_id, results_id}, touched
            client_writes = [
                change for change in events if isinstance(change, ValueChanged) and change.origin in ("rest", "opcua")
            ]
            assert client_writes == []


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def test_the_results_writer_refuses_anything_but_its_own_submodels(tmp_path: Path) -> None:
    async with Hub(simulation_settings(tmp_path / "data")) as hub:
        device_submodel = "urn:aas-server:demo:sm:filler:operational-data"
        before = hub.store.submodel(device_submodel)
        writer = ResultsWriter(hub.store)
        replacement = model.Submodel(device_submodel, id_short="OperationalData")
        with pytest.raises(PermissionError, match="only its own submodels"):
            await writer.put(PROCESS, replacement)
        assert hub.store.submodel(device_submodel) is before


async def test_bad_scenarios_are_400_naming_the_parameter_path(tmp_path: Path) -> None:
    async with Hub(simulation_settings(tmp_path / "data")) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/simulations"
        cases: list[tuple[dict[str, Any], str]] = [
            ({"overrides": {"stations[Press].speed_factor": 1.1}}, "stations[Press].speed_factor: no such parameter"),
            ({"overrides": {"stations[Filler].ideal_cycle_time": -0.3}}, "stations[0].ideal_cycle_time: must be > 0"),
            ({"overrides": {"buffers[0].capacity": 0}}, "buffers[0].capacity: must be >= 1"),
            ({"horizon": 9 * 3600}, "horizon: must be <= 28800 (the configured maximum)"),
            ({"replications": 41}, "replications: must be <= 40 (the configured maximum)"),
            ({"speed": 2}, "speed: is not a parameter"),
        ]
        for scenario, message in cases:
            status, body, _ = await post(http, url, {"shell": PROCESS, **scenario})
            assert status == 400, (scenario, body)
            assert message in body["messages"][0]["text"], (scenario, body)
        status, body, _ = await post(http, url, {"name": "no shell"})
        assert status == 400
        assert body["messages"][0]["text"].startswith("shell:")
        status, body, _ = await post(http, url, {"shell": "urn:nowhere"})
        assert status in (403, 404), body  # an unknown shell is not one the operator may simulate
        assert hub.simulations.jobs() == [], "no job was queued"


async def test_jobs_beyond_max_jobs_are_429_a_job_can_be_cancelled_and_viewers_may_not_simulate(
    tmp_path: Path,
) -> None:
    settings = simulation_settings(tmp_path / "data", max_jobs=1)
    async with Hub(settings) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/simulations"
        long_job = {"shell": PROCESS, "horizon": 8 * 3600, "replications": 40}

        # a role without `simulate` may neither start, nor read, nor cancel
        status, body, _ = await post(http, url, long_job, headers=VIEWER)
        assert status == 403, body
        assert "simulate" in body["messages"][0]["text"]

        status, body, location = await post(http, url, long_job)
        assert status == 202, body
        job_url = origin_of(hub.rest_url or "", location)
        status, body, _ = await post(http, url, {"shell": PROCESS, "horizon": 60})
        assert status == 429, body
        assert "simulation.max_jobs" in body["messages"][0]["text"]
        async with http.get(job_url, headers=VIEWER) as response:
            assert response.status == 403
        async with http.delete(job_url, headers=VIEWER) as response:
            assert response.status == 403
        assert (await job_state(http, job_url))["state"] in ("queued", "running")

        async with http.delete(job_url, headers=OPERATOR) as response:
            assert response.status == 200
            cancelled = await response.json()
        assert cancelled["state"] == "cancelled"
        assert cancelled["completedReplications"] < 40
        assert "results" not in cancelled
        async with http.get(url, params={"state": "cancelled"}, headers=OPERATOR) as response:
            assert response.status == 200, await response.text()
            listed = (await response.json())["result"]
        assert [job["id"] for job in listed] == [cancelled["id"]]
        assert "results" not in listed[0]
        async with http.get(url, params={"state": "done"}, headers=OPERATOR) as response:
            assert (await response.json())["result"] == []
        async with http.get(url, params={"state": "sleeping"}, headers=OPERATOR) as response:
            assert response.status == 400
        async with http.get(url, headers=VIEWER) as response:
            assert response.status == 403, "no rule lets a viewer simulate, so it may not list jobs either"
        # the slot is free again
        status, body, location = await post(http, url, {"shell": PROCESS, "horizon": 600, "replications": 2})
        assert status == 202, body
        assert (await finished(http, origin_of(hub.rest_url or "", location)))["state"] == "done"
        async with http.get(f"{url}/no-such-job", headers=OPERATOR) as response:
            assert response.status == 404
    # starting and cancelling jobs and the refusals are audited; polling a job is not
    records = [orjson.loads(line) for line in (tmp_path / "data" / "audit.log").read_bytes().splitlines()]
    simulations = [record for record in records if "/simulations" in record["path"]]
    started = [record for record in simulations if record["method"] == "POST" and record["status"] == 202]
    assert len(started) == 2
    assert all(record["operation"] == "simulate" and record["principal"] == "demo-operator" for record in started)
    assert any(record["method"] == "DELETE" and record["status"] == 200 for record in simulations)
    assert any(record["principal"] == "viewer" and record["status"] == 403 for record in simulations)
    assert not [record for record in simulations if record["method"] == "GET" and record["status"] == 200]


async def test_two_scenarios_are_compared_with_welch_intervals(tmp_path: Path) -> None:
    async with Hub(simulation_settings(tmp_path / "data")) as hub, aiohttp.ClientSession() as http:
        url = f"{hub.rest_url}/simulations"
        base = {"horizon": 1800, "replications": 5, "seed": 3}
        # the demo line runs at its nominal speed with no failures from KPIs yet: give the capper failures
        failures = {"stations[Capper].cycle_time": {"kind": "exponential", "mean": 0.3}}
        baseline = {**base, "name": "baseline", "overrides": failures}
        faster = {**base, "name": "buffer 200", "overrides": {**failures, "buffers[0].capacity": 200}}
        status, body, location = await post(
            http, f"{url}/$compare", {"shell": PROCESS, "baseline": baseline, "candidate": faster}
        )
        assert status == 202, body
        job = await finished(http, origin_of(hub.rest_url or "", location))
        assert job["state"] == "done", job
        assert [result["scenario"] for result in job["results"]] == ["baseline", "buffer 200"]
        throughput = job["comparison"]["throughput"]
        assert throughput["difference"] == throughput["candidate"] - throughput["baseline"]
        assert throughput["low"] <= throughput["difference"] <= throughput["high"]
        assert isinstance(throughput["significant"], bool)

        # two finished jobs compared directly
        locations = []
        for scenario in (baseline, faster):
            status, body, location = await post(http, url, {"shell": PROCESS, **scenario})
            assert status == 202, body
            locations.append(location)
            await finished(http, origin_of(hub.rest_url or "", location))
        ids = [location.rsplit("/", 1)[1] for location in locations]
        status, body, _ = await post(http, f"{url}/$compare", {"baseline": ids[0], "candidate": ids[1]})
        assert status == 200, body
        assert body["comparison"]["throughput"]["difference"] == throughput["difference"], "same seeds, same numbers"
        status, body, _ = await post(http, f"{url}/$compare", {"baseline": ids[0], "candidate": {"name": "x"}})
        assert status == 400

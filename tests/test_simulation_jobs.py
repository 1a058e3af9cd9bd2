"""The simulation service of a running hub: a crashing worker fails its job with the reason while the hub goes on
serving, the line is built from the twin (hierarchy, Technical Data, KPI failure statistics), old jobs are dropped."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import aiohttp

from aas_server.model.events import ValueChanged, utc_now
from aas_server.runtime.hub import Hub
from aas_server.runtime.simulation import process_data
from aas_server.simulation.jobs import JobView, ScenarioRequest
from tests.support import eventually, wait_until
from tests.test_simulation_rest import PROCESS, _b64, finished, origin_of, post, simulation_settings

FILLER_KPIS = "urn:aas-server:demo:aas:filler/kpi"
FILLER_COUNTER = "urn:aas-server:demo:sm:filler:operational-data"


async def test_a_crashing_worker_fails_its_job_with_the_reason_and_the_hub_goes_on(tmp_path: Path) -> None:
    async with Hub(simulation_settings(tmp_path / "data")) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        url = hub.rest_url
        status, body, location = await post(
            http, f"{url}/simulations", {"shell": PROCESS, "horizon": 8 * 3600, "replications": 40}
        )
        assert status == 202, body
        job_url = origin_of(url, location)
        await wait_until(
            lambda: hub.simulations.job(body["id"]).completed_replications >= 1, within=60.0, what="a replication"
        )
        workers = multiprocessing.active_children()
        assert workers, "the job runs in worker processes"
        os.kill(workers[0].pid or 0, signal.SIGKILL)

        job = await finished(http, job_url)
        assert job["state"] == "failed"
        assert "worker process ended unexpectedly" in job["error"]
        assert "results" not in job

        # the hub still serves, and the next job runs on a new pool
        async with http.get(f"{url}/submodels/{_b64(FILLER_COUNTER)}/submodel-elements/FaultCode/$value") as response:
            assert response.status == 200
        status, body, location = await post(http, f"{url}/simulations", {"shell": PROCESS, "horizon": 600})
        assert status == 202, body
        assert (await finished(http, origin_of(url, location)))["state"] == "done"
        assert hub.simulations.pools_started == 2


async def test_the_line_comes_from_the_hierarchy_technical_data_and_the_kpis(tmp_path: Path) -> None:
    async with Hub(simulation_settings(tmp_path / "data")) as hub:
        data = process_data(hub.store, PROCESS, buffer_capacity=50)
        assert [station["name"] for station in data["stations"]] == ["Filler", "Capper"]
        assert data["stations"][0]["technical_data"] == {"NominalSpeed": 12000.0}
        assert data["buffers"] == [{"name": "FillerToCapper", "capacity": 50}]

        # once the KPIs know failures, the filler fails and is repaired in the model
        now = utc_now()
        for path, value in (
            ("Last24Hours.MTBF", 1800.0),
            ("Last24Hours.MTTR", 90.0),
            ("Last24Hours.QualityRatio", 0.99),
        ):
            hub.store.apply(ValueChanged(FILLER_KPIS, path, value, now, origin="kpi"))
        data = process_data(hub.store, PROCESS, buffer_capacity=50)
        failures = data["stations"][0]["failure_statistics"]
        assert failures["MTBF"] == 1800.0
        assert failures["MTTR"] == 90.0
        assert abs(failures["ScrapRate"] - 0.01) < 1e-12

        view = await hub.simulations.submit(PROCESS, [ScenarioRequest(horizon=600, replications=2)], "tester")
        # the first job stored the line as the process shell's Simulation Models submodel; it is used from now on
        models = hub.store.submodel(f"{PROCESS}/simulation-models")
        assert models.semantic_id is not None
        assert models.semantic_id.key[0].value.endswith("SimulationModels/SimulationModels/1/0")
        done = await eventually(lambda: _view(hub, view.id), lambda found: found.state.finished, within=60.0)
        assert done.state.value == "done", done.error


async def _view(hub: Hub, job_id: str) -> JobView:
    return hub.simulations.job(job_id)


async def test_only_the_configured_number_of_finished_jobs_and_their_results_are_kept(tmp_path: Path) -> None:
    async with Hub(simulation_settings(tmp_path / "data", kept_jobs=1, max_jobs=1)) as hub:
        ids = []
        for _ in range(3):
            view = await hub.simulations.submit(PROCESS, [ScenarioRequest(horizon=300, replications=2)], "tester")
            ids.append(view.id)
            job_id = view.id
            await eventually(lambda: _view(hub, job_id), lambda found: found.state.finished, within=60.0)  # noqa: B023
        kept = [job.id for job in hub.simulations.jobs()]
        assert kept == ids[-2:] or kept == ids[-1:], kept
        results = [submodel.id for submodel in hub.store.submodels() if "/simulation-results/" in submodel.id]
        assert f"{PROCESS}/simulation-results/{ids[0]}" not in results
        assert f"{PROCESS}/simulation-results/{ids[-1]}" in results
        references = {reference.key[-1].value for reference in hub.store.shell(PROCESS).submodel}
        assert f"{PROCESS}/simulation-results/{ids[0]}" not in references


async def test_a_job_cancelled_before_it_started_frees_its_slot(tmp_path: Path) -> None:
    async with Hub(simulation_settings(tmp_path / "data", max_jobs=1)) as hub:
        view = await hub.simulations.submit(PROCESS, [ScenarioRequest(horizon=300, replications=2)], "tester")
        cancelled = await hub.simulations.cancel(view.id, "tester")
        assert cancelled.state.value == "cancelled"
        assert cancelled.finished is not None
        again = await hub.simulations.submit(PROCESS, [ScenarioRequest(horizon=300, replications=2)], "tester")
        assert (await hub.simulations.wait(again.id)).state.value == "done"


async def test_stopping_the_hub_cancels_running_jobs_and_stops_the_workers(tmp_path: Path) -> None:
    async with Hub(simulation_settings(tmp_path / "data")) as hub:
        view = await hub.simulations.submit(PROCESS, [ScenarioRequest(horizon=8 * 3600, replications=40)], "tester")
        await wait_until(
            lambda: hub.simulations.job(view.id).state.value == "running" and bool(multiprocessing.active_children()),
            within=30.0,
            what="the job running in workers",
        )
        service = hub.simulations
    ended = service.job(view.id)
    assert ended.state.value == "cancelled"
    assert ended.error == "the hub stopped"
    assert multiprocessing.active_children() == [], "no worker process outlives the hub"

"""What-if simulation jobs of process twins, run in worker processes beside the live hub (``docs/simulation.md``).

``SimulationService`` (the ``simulation.jobs.SimulationJobs`` the REST routes and the OPC UA
``Simulate`` Method use) owns:

- one pool of ``simulation.workers`` spawned processes for the hub's life (started with the first
  job); replications go to it one call each (``loop.run_in_executor``), at most ``workers`` of a job
  at a time, so that a cancel stops a job between replications and the event loop only awaits;
- a job table bounded by ``simulation.kept_jobs`` finished jobs (the oldest go, with their results
  submodels), and at most ``simulation.max_jobs`` queued or running jobs (``CapacityError``, 429);
- the line of a process shell: its Simulation Models submodel (IDTA 02005) when it has one, else
  built from the twin (``process_data``: the hierarchy's parts in order, their Technical Data, the KPIs'
  failure statistics) and stored as that submodel, so that the model is part of the twin;
- the results: a Simulation Results submodel per job on the process shell (``simulation.results``),
  linked to the scenario and the model, and an MQTT event when a job ends (``simulation_topic``).

A worker that dies (``BrokenProcessPool``) fails the jobs it served with that reason; the pool is
replaced and the hub goes on serving. **Sandbox**: the service writes only through
``ResultsWriter``, which creates, replaces and deletes its own submodels (ids under
``<shell>/simulation-``) and references to them from their shell, and refuses anything else; it holds
no device gateway and never calls ``write_value``, so a simulation cannot reach a device or a live value.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import logging
import multiprocessing
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from basyx.aas import model

from aas_server.config import HubSettings, SimulationSettings
from aas_server.errors import CapacityError, ConflictError, InvalidRequestError, NotFoundError, PersistenceError
from aas_server.model.events import utc_now
from aas_server.simulation.description import LineDescription, SimulationError, apply_overrides
from aas_server.simulation.jobs import JobState, JobView, ScenarioRequest, comparison_json
from aas_server.simulation.model import ReplicationResult, run_replication
from aas_server.simulation.results import simulation_results_submodel
from aas_server.simulation.statistics import Difference, ScenarioResult, aggregate, compare
from aas_server.simulation.submodel import SIMULATION_MODELS_SEMANTIC_ID, line_from_submodel, simulation_models_submodel
from aas_server.simulation.twin import line_from_twin
from aas_server.store.outbox import OutboundEvent, Outbox, encode_identifier
from aas_server.store.twin_store import TwinStore

_LOG = logging.getLogger(__name__)

Replicate = Callable[[LineDescription, int], ReplicationResult]

_HIERARCHY = "HierarchicalStructures"
_TECHNICAL_DATA = ("TechnicalData", "0173-1#01-AHX837#002")
"""IDTA 02003 Technical Data: its semanticIds (URL forms contain the first, 2.0 uses the ECLASS IRDI)."""
_KPI_WINDOW = "Last24Hours"
DEFAULT_RUN = {"horizon": 8 * 3600.0, "warmup": 0.0, "replications": 10, "seed": 1}
"""Run parameters of a line built from the twin, before the scenario's (limited by the settings)."""


def simulation_topic(repository_id: str, shell_id: str, job_id: str, state: JobState) -> str:
    """The MQTT topic of a job's end, beside the shell's change events (``docs/events.md``)."""
    return f"aas-repository/{repository_id}/shells/{encode_identifier(shell_id)}/simulations/{job_id}/{state.value}"


def models_submodel_id(shell_id: str) -> str:
    return f"{shell_id}/simulation-models"


def results_submodel_id(shell_id: str, job_id: str) -> str:
    return f"{shell_id}/simulation-results/{job_id}"


def _semantic(identifiable: model.HasSemantics) -> str:
    reference = identifiable.semantic_id
    return reference.key[0].value if reference is not None and reference.key else ""


def _properties(elements: Any, prefix: str = "", in_list: bool = False) -> Iterator[tuple[str, model.Property]]:
    """Every Property below ``elements`` with its idShort path (list items by index)."""
    for index, element in enumerate(elements):
        if in_list:
            path = f"{prefix}[{index}]"
        else:
            path = f"{prefix}.{element.id_short}" if prefix else str(element.id_short)
        if isinstance(element, model.Property):
            yield path, element
        elif isinstance(element, model.SubmodelElementCollection):
            yield from _properties(element.value, path)
        elif isinstance(element, model.SubmodelElementList):
            yield from _properties(element.value, path, in_list=True)


class _TwinReader:
    """Reads the plain data ``line_from_twin`` needs from the store (values: the live state, else the model's)."""

    def __init__(self, store: TwinStore) -> None:
        self.store = store

    def submodels_of(self, shell: model.AssetAdministrationShell) -> list[model.Submodel]:
        found = []
        for reference in shell.submodel:
            if not reference.key:
                continue
            try:
                found.append(self.store.submodel(reference.key[-1].value))
            except NotFoundError:
                continue
        return found

    def value(self, submodel: model.Submodel, path: str, element: model.Property) -> Any:
        state = self.store.state(submodel.id, path)
        if state is not None and state.value is not None:
            return state.value
        return element.value

    def values(self, submodel: model.Submodel) -> dict[str, Any]:
        """idShort (of the last step) -> value of every Property in ``submodel``."""
        return {
            path.rsplit(".", 1)[-1]: self.value(submodel, path, element)
            for path, element in _properties(submodel.submodel_element)
        }

    def parts(self, shell: model.AssetAdministrationShell) -> list[model.AssetAdministrationShell]:
        """The shells of the parts in the shell's Hierarchical Structures (IDTA 02011), in their order."""
        hierarchy = next((sm for sm in self.submodels_of(shell) if _HIERARCHY in _semantic(sm)), None)
        if hierarchy is None:
            raise SimulationError(f"shell {shell.id!r}: has no Hierarchical Structures submodel naming its stations")
        by_asset = {
            each.asset_information.global_asset_id: each
            for each in self.store.shells()
            if each.asset_information.global_asset_id
        }
        parts = []
        for entry in hierarchy.submodel_element:
            if not isinstance(entry, model.Entity):
                continue
            for node in entry.statement:
                if isinstance(node, model.Entity) and node.global_asset_id in by_asset:
                    parts.append(by_asset[node.global_asset_id])
        if not parts:
            raise SimulationError(f"shell {shell.id!r}: its Hierarchical Structures name no part with a shell")
        return parts

    def station(self, shell: model.AssetAdministrationShell, order: int) -> dict[str, Any]:
        technical: dict[str, Any] = {}
        set_points: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        for submodel in self.submodels_of(shell):
            semantic = _semantic(submodel)
            if submodel.id_short == "TechnicalData" or any(key in semantic for key in _TECHNICAL_DATA):
                values = self.values(submodel)
                for key in ("CycleTime", "NominalSpeed"):
                    if values.get(key) is not None:
                        technical[key] = values[key]
                if "NominalSpeed" not in technical and values.get("NominalCapacity") is not None:
                    technical["NominalSpeed"] = values["NominalCapacity"]  # parts per hour, like NominalSpeed
            elif submodel.id == f"{shell.id}/kpi":
                failures = self._failures(submodel)
            values = self.values(submodel) if "SpeedFactor" not in set_points else {}
            if values.get("SpeedFactor") is not None:
                set_points["SpeedFactor"] = values["SpeedFactor"]
        return {
            "name": shell.id_short or f"station{order}",
            "order": order,
            "technical_data": technical,
            "failure_statistics": failures,
            "set_points": set_points,
        }

    def _failures(self, kpis: model.Submodel) -> dict[str, Any]:
        """MTBF and MTTR (s) of the last 24 h from the KPIs, when both are known and positive."""
        found: dict[str, Any] = {}
        for key in ("MTBF", "MTTR"):
            state = self.store.state(kpis.id, f"{_KPI_WINDOW}.{key}")
            value = state.value if state is not None else None
            if isinstance(value, int | float) and value > 0:
                found[key] = float(value)
        quality = self.store.state(kpis.id, f"{_KPI_WINDOW}.QualityRatio")
        failures = found if len(found) == 2 else {}
        if quality is not None and isinstance(quality.value, int | float) and 0 < quality.value <= 1:
            failures["ScrapRate"] = 1.0 - float(quality.value)
        return failures


def process_data(store: TwinStore, shell_id: str, buffer_capacity: int) -> dict[str, Any]:
    """The plain data of a process shell that ``line_from_twin`` builds a line from (``NotFoundError`` for no shell)."""
    reader = _TwinReader(store)
    shell = store.shell(shell_id)
    parts = reader.parts(shell)
    stations = [reader.station(part, order) for order, part in enumerate(parts, start=1)]
    buffers = [
        {"name": f"{first['name']}To{second['name']}", "capacity": buffer_capacity}
        for first, second in itertools.pairwise(stations)
    ]
    return {"name": shell.id_short or shell.id, "stations": stations, "buffers": buffers, "run": dict(DEFAULT_RUN)}


def _lower_priority(increment: int) -> None:
    """Worker initializer: run below the hub's priority (no-op where ``os.nice`` is missing)."""
    if increment and hasattr(os, "nice"):
        os.nice(increment)


class ResultsWriter:
    """The only way the service changes the model: its own submodels of a shell and the references to them."""

    def __init__(self, store: TwinStore) -> None:
        self._store = store

    @staticmethod
    def _check_own(shell_id: str, submodel_id: str) -> None:
        if not submodel_id.startswith(f"{shell_id}/simulation-"):
            raise PermissionError(f"a simulation writes only its own submodels, not {submodel_id!r}")

    async def put(self, shell_id: str, submodel: model.Submodel) -> None:
        self._check_own(shell_id, submodel.id)
        shell = self._store.shell(shell_id)
        try:
            existing = self._store.submodel(submodel.id)
        except NotFoundError:
            await self._store.create(submodel)
        else:
            # the id alone does not make it ours: someone may have created a submodel there
            referenced = any(reference.key and reference.key[-1].value == submodel.id for reference in shell.submodel)
            if not referenced or _semantic(existing) != _semantic(submodel):
                raise ConflictError(
                    f"submodel {submodel.id!r} exists and is not a simulation submodel of shell {shell_id!r}; "
                    "a simulation replaces only its own submodels (delete or rename that one)"
                )
            await self._store.replace(submodel)
        shell = self._store.shell(shell_id)
        if not any(reference.key and reference.key[-1].value == submodel.id for reference in shell.submodel):
            shell = copy.deepcopy(shell)
            shell.submodel.add(model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, submodel.id),), model.Submodel))
            await self._store.replace(shell)

    async def remove(self, shell_id: str, submodel_id: str) -> None:
        self._check_own(shell_id, submodel_id)
        try:
            shell = copy.deepcopy(self._store.shell(shell_id))
        except NotFoundError:
            shell = None
        if shell is not None:
            gone = [
                reference for reference in shell.submodel if reference.key and reference.key[-1].value == submodel_id
            ]
            if gone:
                for reference in gone:
                    shell.submodel.discard(reference)
                await self._store.replace(shell)
        with contextlib.suppress(NotFoundError):
            await self._store.delete(submodel_id)


@dataclass
class _Job:
    view: JobView
    descriptions: list[LineDescription]
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    results: list[ScenarioResult] = field(default_factory=list)


class SimulationService:
    """The hub's simulation jobs (``simulation.jobs.SimulationJobs``); see the module docstring."""

    def __init__(
        self,
        store: TwinStore,
        settings: SimulationSettings,
        *,
        outbox: Outbox | None = None,
        repository_id: str = "aas-server",
        replicate: Replicate = run_replication,
    ) -> None:
        self.settings = settings
        self._store = store
        self._writer = ResultsWriter(store)
        self._outbox = outbox
        self._repository_id = repository_id
        # the configured bound on a replication's events goes with each call (a partial pickles to the workers)
        self._replicate = (
            functools.partial(run_replication, max_events=settings.max_events)
            if replicate is run_replication
            else replicate
        )
        self._pool: ProcessPoolExecutor | None = None
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._active = 0
        self._closed = False
        self.pools_started = 0
        """Worker pools started so far (a crashed pool is replaced by a new one)."""

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def __aenter__(self) -> SimulationService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel every job, wait for them, and shut the worker pool down."""
        self._closed = True
        tasks = [job.task for job in self._jobs.values() if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            # A replication in a worker cannot be interrupted and may run up to ``max_events``: stop the workers
            # rather than wait. The pool has no public way to do so before Python 3.14 (``terminate_workers``).
            processes: dict[int, Any] = getattr(pool, "_processes", None) or {}
            for process in list(processes.values()):
                process.terminate()
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _current_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawned like ``runner.worker_pool``, and niced so that the hub's event loop gets the CPU first
            self._pool = ProcessPoolExecutor(
                max_workers=self.settings.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_lower_priority,
                initargs=(self.settings.worker_niceness,),
            )
            self.pools_started += 1
        return self._pool

    def _replace_pool(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            self._pool = None
            _LOG.error("a simulation worker process ended unexpectedly; the worker pool is replaced")
        broken.shutdown(wait=False, cancel_futures=True)

    # -- lines ------------------------------------------------------------------------------------------

    def _limits(self) -> dict[str, Any]:
        return {
            "max_horizon": self.settings.max_horizon,
            "max_replications": self.settings.max_replications,
            "max_events": self.settings.max_events,
        }

    async def base_line(self, shell_id: str) -> tuple[LineDescription, str]:
        """The line of a process shell and the id of its Simulation Models submodel (made from the twin if missing)."""
        shell = self._store.shell(shell_id)
        for submodel in _TwinReader(self._store).submodels_of(shell):
            if _semantic(submodel) == SIMULATION_MODELS_SEMANTIC_ID:
                # the stored run parameters are defaults a scenario may lower; the limits apply to the scenario
                return line_from_submodel(submodel), submodel.id
        data = process_data(self._store, shell_id, self.settings.buffer_capacity)
        limits = self._limits()
        data["run"]["horizon"] = min(data["run"]["horizon"], self.settings.max_horizon)
        data["run"]["replications"] = min(data["run"]["replications"], self.settings.max_replications)
        line = line_from_twin(data, **limits)
        submodel_id = models_submodel_id(shell_id)
        await self._writer.put(shell_id, simulation_models_submodel(line, submodel_id))
        return line, submodel_id

    # -- jobs -------------------------------------------------------------------------------------------

    async def submit(self, shell_id: str, scenarios: Sequence[ScenarioRequest], user: str) -> JobView:
        """Queue a job of one scenario (or two, compared); see ``simulation.jobs``."""
        if self._closed:
            raise CapacityError("the hub is stopping; no simulation jobs are accepted")
        if not 1 <= len(scenarios) <= 2:
            raise InvalidRequestError("a job has one scenario, or two to compare")
        if self._active >= self.settings.max_jobs:
            raise CapacityError(
                f"{self._active} simulation jobs are queued or running, the configured maximum "
                f"(simulation.max_jobs = {self.settings.max_jobs}); try again when one has finished"
            )
        base, _ = await self.base_line(shell_id)
        descriptions = []
        for position, scenario in enumerate(scenarios):
            try:
                line = apply_overrides(base, scenario.all_overrides(), **self._limits())
            except SimulationError as error:
                prefix = f"scenarios[{position}]: " if len(scenarios) == 2 else ""
                raise SimulationError(f"{prefix}{error}") from None
            descriptions.append(line.model_copy(update={"name": scenario.name}))
        if len(descriptions) == 2 and min(each.replications for each in descriptions) < 2:
            raise SimulationError("replications: a comparison needs at least 2 on each side")
        if self._active >= self.settings.max_jobs:  # another job came in while the line was built
            raise CapacityError(f"the configured maximum of {self.settings.max_jobs} simulation jobs is reached")
        job_id = uuid.uuid4().hex[:16]
        view = JobView(
            id=job_id,
            shell=shell_id,
            scenarios=tuple(scenarios),
            state=JobState.QUEUED,
            user=user,
            created=utc_now(),
            replications=sum(each.replications for each in descriptions),
        )
        job = _Job(view, descriptions)
        self._jobs[job_id] = job
        self._active += 1
        job.task = asyncio.create_task(self._run(job), name=f"simulation job {job_id}")
        await self._evict()
        return view

    def job(self, job_id: str) -> JobView:
        found = self._jobs.get(job_id)
        if found is None:
            raise NotFoundError(f"no simulation job {job_id!r}")
        return found.view

    async def wait(self, job_id: str) -> JobView:
        """The job once it has finished (it is not cancelled when the caller stops waiting)."""
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no simulation job {job_id!r}")
        if job.task is not None:
            await asyncio.wait({job.task})
        return job.view

    def jobs(self) -> list[JobView]:
        return [job.view for job in self._jobs.values()]

    async def cancel(self, job_id: str, user: str) -> JobView:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no simulation job {job_id!r}")
        if job.view.state.finished or job.task is None:
            return job.view
        job.cancel_requested = True
        job.task.cancel()
        await asyncio.gather(job.task, return_exceptions=True)
        if job.view.state is JobState.QUEUED:  # cancelled before its first step: ``_run`` never ran
            self._active -= 1
            self._update(job, state=JobState.CANCELLED, error="cancelled", finished=utc_now())
            await self._publish(job.view)
        _LOG.info("simulation job %s cancelled by %s", job_id, user)
        return job.view

    def compare(self, baseline_id: str, candidate_id: str) -> dict[str, Any]:
        results = []
        for role, job_id in (("baseline", baseline_id), ("candidate", candidate_id)):
            view = self.job(job_id)
            if view.state is not JobState.DONE or len(view.results) != 1:
                raise InvalidRequestError(
                    f"{role}: job {job_id!r} is {view.state.value}; only a finished job of one scenario can be compared"
                )
            if view.results[0].estimates and len(view.results[0].replications) < 2:
                raise InvalidRequestError(f"{role}: job {job_id!r} has 1 replication; a comparison needs 2 or more")
            results.append(view.results[0])
        return {
            "baseline": baseline_id,
            "candidate": candidate_id,
            "comparison": comparison_json(compare(results[0], results[1])),
        }

    def _update(self, job: _Job, **changes: Any) -> None:
        job.view = replace(job.view, **changes)

    async def _run(self, job: _Job) -> None:
        started = time.perf_counter()
        try:
            self._update(job, state=JobState.RUNNING, started=utc_now())
            replications = []
            for description in job.descriptions:
                replications.append(await self._replications(job, description))
            # aggregation imports scipy on first use and computes t quantiles: off the event loop
            results, comparison = await asyncio.to_thread(self._aggregate, job.descriptions, replications)
            submodel_id = results_submodel_id(job.view.shell, job.view.id)
            await self._write_results(job, submodel_id, results, comparison)
            self._update(
                job,
                state=JobState.DONE,
                results=tuple(results),
                comparison=comparison,
                results_submodels=(submodel_id,),
            )
        except asyncio.CancelledError:
            self._update(
                job, state=JobState.CANCELLED, error="cancelled" if job.cancel_requested else "the hub stopped"
            )
            if not job.cancel_requested:
                raise
        except BrokenProcessPool as error:
            reason = f"a worker process ended unexpectedly ({error or 'BrokenProcessPool'}); the pool was replaced"
            self._update(job, state=JobState.FAILED, error=reason)
        except (SimulationError, PersistenceError, NotFoundError, ConflictError) as error:
            self._update(job, state=JobState.FAILED, error=str(error))
        except Exception as error:  # a failed replication: the job fails with its reason, the hub goes on
            _LOG.exception("simulation job %s failed", job.view.id)
            self._update(job, state=JobState.FAILED, error=f"{type(error).__name__}: {error}")
        finally:
            self._active -= 1
            self._update(job, finished=utc_now())
            _LOG.info(
                "simulation job %s %s after %.1f s", job.view.id, job.view.state.value, time.perf_counter() - started
            )
            await self._publish(job.view)

    @staticmethod
    def _aggregate(
        descriptions: Sequence[LineDescription], replications: Sequence[list[ReplicationResult]]
    ) -> tuple[list[ScenarioResult], dict[str, Difference] | None]:
        results = [
            aggregate(description.name, each, description.confidence)
            for description, each in zip(descriptions, replications, strict=True)
        ]
        comparison = compare(results[0], results[1], descriptions[0].confidence) if len(results) == 2 else None
        # a kept job needs each replication's figures (paired comparisons), not its time series (the means are kept)
        kept = [
            replace(result, replications=[replace(each, series={}, series_times=[]) for each in result.replications])
            for result in results
        ]
        return kept, comparison

    async def _replications(self, job: _Job, description: LineDescription) -> list[ReplicationResult]:
        """Every replication of ``description`` on the pool, at most ``workers`` of this job at a time."""
        loop = asyncio.get_running_loop()
        pool = self._current_pool()
        indices = iter(range(description.replications))
        results: list[ReplicationResult] = []
        pending: set[asyncio.Future[ReplicationResult]] = set()

        def submit(index: int) -> None:
            pending.add(loop.run_in_executor(pool, self._replicate, description, index))

        try:
            for index in itertools.islice(indices, self.settings.workers):
                submit(index)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    results.append(future.result())
                    self._update(job, completed_replications=job.view.completed_replications + 1)
                    following = next(indices, None)
                    if following is not None:
                        submit(following)
        except BrokenProcessPool:
            self._replace_pool(pool)
            raise
        finally:
            for future in pending:
                future.cancel()
        return results

    async def _write_results(
        self, job: _Job, submodel_id: str, results: list[ScenarioResult], comparison: dict[str, Difference] | None
    ) -> None:
        try:
            models_id: str | None = models_submodel_id(job.view.shell)
            self._store.submodel(models_id or "")
        except NotFoundError:
            models_id = None
        submodel = simulation_results_submodel(
            submodel_id,
            job.view.id,
            results,
            [scenario.model_dump() for scenario in job.view.scenarios],
            [description.model_dump(mode="json") for description in job.descriptions],
            models_id,
            comparison,
        )
        await self._writer.put(job.view.shell, submodel)

    async def _evict(self) -> None:
        """Drop the oldest finished jobs beyond ``kept_jobs``, and their results submodels."""
        finished = [job for job in self._jobs.values() if job.view.state.finished]
        for job in finished[: max(0, len(finished) - self.settings.kept_jobs)]:
            del self._jobs[job.view.id]
            for submodel_id in job.view.results_submodels:
                try:
                    await self._writer.remove(job.view.shell, submodel_id)
                except (NotFoundError, PersistenceError) as error:
                    _LOG.warning("could not remove the results of simulation job %s: %s", job.view.id, error)

    async def _publish(self, view: JobView) -> None:
        if self._outbox is None:
            return
        payload: dict[str, Any] = {
            "job": view.id,
            "shell": view.shell,
            "state": view.state.value,
            "user": view.user,
            "scenarios": [scenario.name for scenario in view.scenarios],
            "time": (view.finished or utc_now()).isoformat(),
            "resultsSubmodels": list(view.results_submodels),
        }
        if view.error is not None:
            payload["error"] = view.error
        if view.results:
            payload["throughput"] = [result.estimates["throughput"].mean for result in view.results]
            payload["oee"] = [result.estimates["oee"].mean for result in view.results]
            payload["bottleneck"] = [result.bottleneck for result in view.results]
        topic = simulation_topic(self._repository_id, view.shell, view.id, view.state)
        try:
            await self._outbox.outbox_append([OutboundEvent(topic, orjson.dumps(payload))])
        except PersistenceError as error:
            _LOG.error("the end of simulation job %s is not announced: %s", view.id, error)


def simulation_service(settings: HubSettings, store: TwinStore, outbox: Outbox | None) -> SimulationService:
    """The hub's simulation service (``Hub`` enters it into its exit stack; the pool starts with the first job)."""
    return SimulationService(store, settings.simulation, outbox=outbox, repository_id=settings.events.repository_id)

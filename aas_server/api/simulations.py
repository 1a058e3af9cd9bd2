"""What-if simulation jobs of process shells, over REST (``docs/simulation.md``).

Routes (under each API prefix, beside ``/alarms``), present when the hub runs simulations
(``create_app(simulations=...)``); all are the access operation ``simulate`` on the process shell
(``api/auth.py``):

- ``POST /simulations``: body ``{"shell": "<process shell id>", "name": ..., "overrides": {"<parameter
  path>": value, ...}, "horizon": s, "replications": n, "seed": n}``; ``202`` with ``Location`` of the
  job and the job's JSON. A parameter path that does not exist, an impossible value or a horizon beyond
  ``simulation.max_horizon`` is a ``400`` Result naming the path; ``simulation.max_jobs`` jobs queued or
  running make it ``429``.
- ``GET /simulations``: the jobs of the shells the caller may simulate, oldest first, without their
  results; filters ``shell`` (base64url) and ``state``; paged with ``limit`` and ``cursor``.
- ``GET /simulations/{jobId}``: the job: ``state`` (``queued``, ``running``, ``done``, ``failed``,
  ``cancelled``), progress, ``error``, and once done ``results`` (line figures, stations, buffers,
  bottleneck, each with its confidence interval, and the time series) and ``resultsSubmodels``.
- ``DELETE /simulations/{jobId}``: cancels a queued or running job between replications; the job's
  JSON (a finished job is left as it is).
- ``POST /simulations/$compare``: ``{"baseline": "<jobId>", "candidate": "<jobId>"}`` compares two
  finished jobs (``200``); ``{"shell": ..., "baseline": {scenario}, "candidate": {scenario}}`` runs both
  as one job (``202``, the comparison is in its results). Every figure as ``candidate - baseline``
  with Welch's interval and ``significant``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aas_server.api.auth import ACCESS_KEY
from aas_server.api.context import SIMULATIONS_KEY
from aas_server.api.paging import page_positions, parse_page_request
from aas_server.api.routing import RouteTable
from aas_server.api.serialization import decode_identifier, json_response, read_json_object
from aas_server.config import AccessOperation
from aas_server.errors import AccessDeniedError, InvalidRequestError
from aas_server.simulation.description import SimulationError
from aas_server.simulation.jobs import JobState, JobView, ScenarioRequest, SimulationJobs, parse_scenario

routes = RouteTable()


def _jobs(request: web.Request) -> SimulationJobs:
    return request.app[SIMULATIONS_KEY]


def _user(request: web.Request) -> str:
    access = request.get(ACCESS_KEY)
    return access.principal.name if access is not None else "anonymous"


def _shell(data: dict[str, Any]) -> str:
    shell = data.get("shell")
    if not isinstance(shell, str) or not shell:
        raise SimulationError("shell: the id of the process shell to simulate is required")
    return shell


def _created(request: web.Request, view: JobView) -> web.Response:
    prefix = request.path.rsplit("/simulations", 1)[0]
    response = json_response(view.to_json(), status=202)
    response.headers["Location"] = f"{prefix}/simulations/{view.id}"
    return response


@routes.post("/simulations")
async def post_simulation(request: web.Request) -> web.Response:
    """Queue a scenario of a process shell; ``202`` with the job's ``Location``."""
    data = await read_json_object(request, "scenario")
    shell = _shell(data)
    scenario = parse_scenario({key: value for key, value in data.items() if key != "shell"})
    return _created(request, await _jobs(request).submit(shell, [scenario], _user(request)))


@routes.get("/simulations")
async def get_simulations(request: web.Request) -> web.Response:
    """The jobs the caller may simulate (their shells), filtered by ``shell`` and ``state``; paged; no results."""
    query = request.query
    paging = parse_page_request(query)
    shell = decode_identifier(query["shell"], "shell") if "shell" in query else None
    state = query.get("state")
    states = [each.value for each in JobState]
    if state is not None and state not in states:
        raise InvalidRequestError(f"query parameter state={state!r} is not one of {', '.join(states)}")
    access = request.get(ACCESS_KEY)
    selected: list[JobView] = []
    for view in _jobs(request).jobs():
        if (shell is not None and view.shell != shell) or (state is not None and view.state.value != state):
            continue
        if access is not None:
            target = access.model.shell_target(view.shell)
            if not access.model.policy.decide(access.roles, AccessOperation.SIMULATE, target).allowed:
                continue
        selected.append(view)
    page = page_positions(selected, paging, lambda view: view.id)
    return json_response(page.to_json(lambda view: view.to_json(results=False)))


@routes.get("/simulations/{jobId}")
async def get_simulation(request: web.Request) -> web.Response:
    """The job's state, progress and, once done, results."""
    return json_response(_jobs(request).job(request.match_info["jobId"]).to_json())


@routes.delete("/simulations/{jobId}")
async def delete_simulation(request: web.Request) -> web.Response:
    """Cancel a queued or running job (between replications); the job as it ended.

    Only its starter may, or a caller whose rules allow ``simulate`` everywhere: another user with ``simulate`` on
    the shell may read the job but not stop it."""
    jobs = _jobs(request)
    job_id = request.match_info["jobId"]
    started_by = jobs.job(job_id).user
    access = request.get(ACCESS_KEY)
    if access is not None and started_by != _user(request) and not access.unrestricted(AccessOperation.SIMULATE):
        raise AccessDeniedError(
            f"simulation job {job_id!r} was started by {started_by!r}; only that user, or a role that may simulate "
            "everywhere, may cancel it"
        )
    view = await jobs.cancel(job_id, _user(request))
    return json_response(view.to_json())


@routes.post("/simulations/$compare")
async def compare_simulations(request: web.Request) -> web.Response:
    """Compare two finished jobs (``200``), or run two scenarios as one comparison job (``202``)."""
    data = await read_json_object(request, "comparison")
    unknown = set(data) - {"shell", "baseline", "candidate"}
    if unknown:
        raise SimulationError(f"{', '.join(sorted(unknown))}: is not a member of a comparison")
    baseline, candidate = data.get("baseline"), data.get("candidate")
    jobs = _jobs(request)
    if isinstance(baseline, str) and isinstance(candidate, str):
        return json_response(jobs.compare(baseline, candidate))
    if isinstance(baseline, dict) and isinstance(candidate, dict):
        scenarios: list[ScenarioRequest] = [
            parse_scenario(baseline, "baseline"),
            parse_scenario(candidate, "candidate"),
        ]
        return _created(request, await jobs.submit(_shell(data), scenarios, _user(request)))
    raise SimulationError("baseline, candidate: give two job ids, or two scenarios and the shell")

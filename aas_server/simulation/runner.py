"""Runs the replications of a line, inline or in worker processes, and aggregates them.

Each replication is the pure function ``run_replication(description, index)``; its random streams
depend only on the description's seed and the index, so the result is the same whatever the
number of workers. Worker processes are started with ``spawn`` (no fork of a process that runs an
event loop and threads); the caller (``runtime/``) owns the bound on concurrent jobs.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from aas_server.simulation.description import LineDescription
from aas_server.simulation.model import ReplicationResult, run_replication
from aas_server.simulation.statistics import ScenarioResult, aggregate


def run_replications(description: LineDescription, workers: int = 1) -> list[ReplicationResult]:
    """Every replication of the line, in index order, on ``workers`` processes (1: in this process)."""
    indices = range(description.replications)
    if workers <= 1 or description.replications == 1:
        return [run_replication(description, index) for index in indices]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, description.replications), mp_context=context) as executor:
        return list(executor.map(run_replication, [description] * description.replications, indices))


def run_scenario(description: LineDescription, workers: int = 1) -> ScenarioResult:
    """Run and aggregate every replication of the line (see ``run_replications``)."""
    return aggregate(description.name, run_replications(description, workers), description.confidence)

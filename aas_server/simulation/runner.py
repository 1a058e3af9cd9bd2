"""Runs the replications of a line, inline or in worker processes, and aggregates them.

Each replication is the pure function ``run_replication(description, index)``; its random streams
depend only on the description's seed and the index, so the result is the same whatever the
number of workers. Worker processes are started with ``spawn`` (no fork of a process that runs an
event loop and threads). Starting them costs a fresh interpreter each (which imports the parent's
``__main__`` module again), so a caller that runs many jobs, such as the hub, passes one long-lived
executor; the caller (``runtime/``) also owns the bound on concurrent jobs.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor

from aas_server.simulation.description import LineDescription
from aas_server.simulation.model import ReplicationResult, run_replication
from aas_server.simulation.statistics import ScenarioResult, aggregate


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes for replications; the caller owns it (``with`` or ``shutdown``)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def run_replications(
    description: LineDescription, workers: int = 1, executor: Executor | None = None
) -> list[ReplicationResult]:
    """Every replication of the line, in index order.

    On ``executor`` when given; else on ``workers`` new worker processes, or in this process for 1.
    """
    indices = range(description.replications)
    descriptions = [description] * description.replications
    if executor is not None:
        return list(executor.map(run_replication, descriptions, indices))
    if workers <= 1 or description.replications == 1:
        return [run_replication(description, index) for index in indices]
    with worker_pool(min(workers, description.replications)) as pool:
        return list(pool.map(run_replication, descriptions, indices))


def run_scenario(description: LineDescription, workers: int = 1, executor: Executor | None = None) -> ScenarioResult:
    """Run and aggregate every replication of the line (see ``run_replications``)."""
    return aggregate(description.name, run_replications(description, workers, executor), description.confidence)

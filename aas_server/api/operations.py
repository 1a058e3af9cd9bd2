"""Operation invocation (IDTA-01002 Part 2, *InvokeOperation*, sync and async, and their results).

An Operation element only describes its variables; what it does is code the hub registers:
``OperationRegistry.register(submodel_id, id_short_path, handler)`` where ``handler`` is an async
callable taking the input and in-output values by idShort (ValueOnly) and returning the output and
in-output values by idShort. Invoking an Operation without a registered handler is answered with
an ``OperationResult`` whose ``executionState`` is ``Failed``, ``success`` false and a message with
code ``NotExecutable`` (``200``: the request was fine, the operation cannot run here).

Asynchronous invocations (``invoke-async``) answer ``202`` with ``Location`` pointing at
``operation-status/{handleId}``; the status is ``200`` with ``executionState: Running`` while the
handler runs and ``302`` to ``operation-results/{handleId}`` once it finished. The last
``OperationRuns.max_runs`` invocations are kept in memory.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from basyx.aas import model

from aas_server.errors import HubError, InvalidRequestError, NotFoundError
from aas_server.store.operations import OperationHandler, OperationRegistry

__all__ = ["OperationHandler", "OperationRegistry", "OperationRuns", "Outcome", "parse_duration", "run_operation"]

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<days>\d+)D)?"
    r"(?:T(?!$)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """An ``xs:duration`` such as ``PT30S`` (years as 365 days, months as 30); ``400`` if malformed, negative or
    beyond what ``timedelta`` holds (about 2.7 million years)."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidRequestError(f"clientTimeoutDuration {text!r} is not a non-negative xs:duration such as PT30S")
    parts = {name: float(value) for name, value in match.groupdict().items() if value is not None}
    try:
        return timedelta(
            days=parts.get("years", 0) * 365 + parts.get("months", 0) * 30 + parts.get("days", 0),
            hours=parts.get("hours", 0),
            minutes=parts.get("minutes", 0),
            seconds=parts.get("seconds", 0),
        )
    except OverflowError:
        raise InvalidRequestError(f"clientTimeoutDuration {text[:64]!r} is longer than a timeout can be") from None


@dataclass(slots=True)
class Outcome:
    """The result of one invocation: state, success, messages and output values by idShort."""

    execution_state: str
    success: bool
    outputs: Mapping[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)


def _message(code: str, text: str, timestamp: str) -> dict[str, str]:
    return {"code": code, "messageType": "Error", "text": text, "timestamp": timestamp}


async def run_operation(
    handler: OperationHandler | None,
    inputs: Mapping[str, Any],
    time_limit: timedelta | None,
    timestamp: Callable[[], str],
    what: str,
) -> Outcome:
    """Run ``handler`` on ``inputs`` within ``time_limit``; failures become a failed ``Outcome``, not an error."""
    if handler is None:
        return Outcome(
            "Failed",
            False,
            messages=[_message("NotExecutable", f"{what} has no implementation in this server", timestamp())],
        )
    try:
        async with asyncio.timeout(None if time_limit is None else time_limit.total_seconds()):
            outputs = await handler(inputs)
    except TimeoutError:
        return Outcome("Timeout", False, messages=[_message("Timeout", f"{what} did not finish in time", timestamp())])
    except HubError as error:
        return Outcome("Failed", False, messages=[_message(type(error).__name__, str(error), timestamp())])
    except Exception:
        return Outcome("Failed", False, messages=[_message("InternalServerError", f"{what} failed", timestamp())])
    return Outcome("Completed", True, outputs=dict(outputs))


@dataclass(slots=True)
class Run:
    """One asynchronous invocation."""

    submodel_id: str
    id_short_path: str
    operation: model.Operation
    task: asyncio.Task[Outcome]


class OperationsBusyError(HubError):
    """``max_runs`` asynchronous invocations are still running (``503`` with ``Retry-After``)."""


class OperationRuns:
    """Asynchronous invocations by handle id, at most ``max_runs``.

    A new run makes room by forgetting the oldest *finished* runs (their results are gone); a run
    still running is never cancelled for another, so one caller's flood of invocations cannot stop
    what another started. With ``max_runs`` runs still running a new one is refused
    (:class:`OperationsBusyError`).
    """

    def __init__(self, max_runs: int = 1000) -> None:
        self.max_runs = max_runs
        self._runs: OrderedDict[str, Run] = OrderedDict()

    def start(self, submodel_id: str, id_short_path: str, operation: model.Operation, work: Awaitable[Outcome]) -> str:
        if len(self._runs) >= self.max_runs:
            finished = [handle_id for handle_id, run in self._runs.items() if run.task.done()]
            for handle_id in finished[: len(self._runs) - self.max_runs + 1]:
                del self._runs[handle_id]
        if len(self._runs) >= self.max_runs:
            if inspect.iscoroutine(work):
                work.close()
            raise OperationsBusyError(
                f"{self.max_runs} asynchronous operation invocations are still running; ask again once one has finished"
            )
        handle_id = uuid.uuid4().hex
        self._runs[handle_id] = Run(submodel_id, id_short_path, operation, asyncio.ensure_future(work))
        return handle_id

    def get(self, submodel_id: str, id_short_path: str, handle_id: str) -> Run:
        run = self._runs.get(handle_id)
        if run is None or run.submodel_id != submodel_id or run.id_short_path != id_short_path:
            raise NotFoundError(f"no operation invocation with handleId {handle_id!r} here")
        return run

    async def close(self) -> None:
        """Cancel what still runs (application cleanup)."""
        tasks = [run.task for run in self._runs.values() if not run.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runs.clear()

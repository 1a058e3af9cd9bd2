"""The ``Simulate`` Method of each process shell's object: a what-if simulation over OPC UA (``docs/simulation.md``).

``Simulate(Scenario: String) -> JobId: String``: the scenario is the JSON a REST ``POST /simulations``
takes, without ``shell`` (``{"name": ..., "overrides": {"stations[Filler].speed_factor": 1.1},
"horizon": 3600, "replications": 10, "seed": 1}``); the job runs on the hub's simulation service and is
read over REST (``GET /simulations/{JobId}``) or as the Simulation Results submodel it writes.

The Method node (``<shell id>/$simulate``, a component of the shell's object) is present on shells whose
``CompositionLevel`` extension is ``process``. Calling it needs a user that may act (operator, admin)
and, with access control, the operation ``simulate`` on the shell; else ``BadUserAccessDenied``
(audited). Bad input is ``BadInvalidArgument``, with the reason naming the parameter path in the
input argument's diagnostic info (``AdditionalInfo``); ``simulation.max_jobs`` reached is
``BadTooManyOperations``; an unknown shell ``BadNodeIdUnknown``.

Shells created (or whose object is re-created) while the server runs get it after the model change.
Left out: job status or cancel Methods (REST has them).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes
from basyx.aas import model

from aas_server.config import AccessOperation
from aas_server.errors import HubError, InvalidRequestError
from aas_server.opcua.node_ids import shell_node_id
from aas_server.opcua.processor import HubServer, calling_user
from aas_server.opcua.projection import DISPLAY_LOCALE
from aas_server.opcua.sync import ModelChangeHandler, Resynchronizer
from aas_server.opcua_common.status import status, status_code_for_error
from aas_server.simulation.jobs import SimulationJobs, parse_scenario
from aas_server.store.twin_store import ModelChanged, TwinStore

_LOG = logging.getLogger(__name__)

METHOD_NAME = "Simulate"
PROCESS_LEVEL = "process"


def simulate_node_id(shell_id: str) -> str:
    """The ``Simulate`` Method node of a shell (owned by no AAS object, so the generic ``invoke`` check passes it)."""
    return f"{shell_id}/$simulate"


def is_process_shell(shell: model.AssetAdministrationShell) -> bool:
    """Whether the shell is a process twin (its ``CompositionLevel`` extension, ``docs/twins.md``)."""
    return any(
        extension.name == "CompositionLevel" and extension.value == PROCESS_LEVEL for extension in shell.extension
    )


def _result(code: int, output: str | None = None, reason: str | None = None) -> ua.CallMethodResult:
    result = ua.CallMethodResult()
    result.StatusCode = status(code)
    result.InputArgumentResults = [status(code if code == StatusCodes.BadInvalidArgument else StatusCodes.Good)]
    if reason is not None:
        result.InputArgumentDiagnosticInfos = [ua.DiagnosticInfo(AdditionalInfo=ua.String(reason))]
    if output is not None:
        result.OutputArguments = [ua.Variant(output, ua.VariantType.String)]
    return result


class SimulateMethods:
    """Adds ``Simulate`` to the process shells' objects and runs its calls on ``jobs``."""

    def __init__(self, server: HubServer, jobs: SimulationJobs, store: TwinStore, namespace_index: int) -> None:
        self._server = server
        self._jobs = jobs
        self._store = store
        self._namespace_index = namespace_index
        self._shells: dict[ua.NodeId, str] = {}

    def _node(self, identifier: str) -> ua.NodeId:
        return ua.NodeId(ua.String(identifier), ua.Int16(self._namespace_index))

    async def start(self) -> None:
        await self.sync()
        _LOG.info("OPC UA: Simulate on %d process shells", len(self._shells))

    def following(
        self, apply_model_change: ModelChangeHandler, resynchronize: Resynchronizer
    ) -> tuple[ModelChangeHandler, Resynchronizer]:
        """The store sync's handlers, each adding ``Simulate`` to process shells that came (or came back) after."""

        async def apply(change: ModelChanged) -> None:
            await apply_model_change(change)
            await self.sync()

        async def resynchronize_all() -> None:
            await resynchronize()
            await self.sync()

        return apply, resynchronize_all

    async def sync(self) -> None:
        """A ``Simulate`` Method on every process shell's object that lacks one (new, or its object re-created)."""
        address_space = self._server.iserver.aspace
        wanted = {shell.id: shell for shell in self._store.shells() if is_process_shell(shell)}
        self._shells = {node: shell_id for node, shell_id in self._shells.items() if shell_id in wanted}
        for shell_id in wanted:
            parent_id = self._node(shell_node_id(shell_id))
            node_id = self._node(simulate_node_id(shell_id))
            if parent_id not in address_space or node_id in address_space:
                continue
            await self._add_method(parent_id, node_id)
            self._shells[node_id] = shell_id

    async def _add_method(self, parent_id: ua.NodeId, node_id: ua.NodeId) -> None:
        scenario = ua.Argument()
        scenario.Name = "Scenario"
        scenario.DataType = ua.NodeId(ua.Int32(ua.ObjectIds.String))
        scenario.ValueRank = -1
        scenario.Description = ua.LocalizedText("The scenario as JSON: name, overrides, horizon...", DISPLAY_LOCALE)
        job = ua.Argument()
        job.Name = "JobId"
        job.DataType = ua.NodeId(ua.Int32(ua.ObjectIds.String))
        job.ValueRank = -1
        job.Description = ua.LocalizedText("The job, at GET /simulations/{JobId}", DISPLAY_LOCALE)
        name = ua.QualifiedName(METHOD_NAME, ua.UInt16(self._namespace_index))
        method = await self._server.get_node(parent_id).add_method(node_id, name, self._simulate, [scenario], [job])
        # Every display name of the hub carries its locale (DISPLAY_LOCALE); asyncua's
        # add_method leaves the method's and its argument properties' without one.
        for node in (method, *await method.get_children()):
            browse_name = (await node.read_browse_name()).Name
            await node.write_attribute(
                ua.AttributeIds.DisplayName,
                ua.DataValue(ua.Variant(ua.LocalizedText(browse_name, DISPLAY_LOCALE))),
            )

    def _may_simulate(self, user: Any, shell_id: str) -> bool:
        if user is None or not bool(getattr(user, "may_write_values", False)):
            return False
        access = self._server.access
        if access is None:
            return True
        node = self._node(shell_node_id(shell_id))
        (allowed,) = access.allowed(user, AccessOperation.SIMULATE, [node], "CALL", audit_allowed=True)
        return allowed

    async def _simulate(self, parent: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
        shell_id = str(parent.Identifier).removesuffix("/$shell")
        if shell_id not in self._shells.values():
            return _result(StatusCodes.BadNodeIdUnknown)
        user = calling_user()
        if not self._may_simulate(user, shell_id):
            return _result(StatusCodes.BadUserAccessDenied)
        if len(arguments) != 1:
            return _result(StatusCodes.BadArgumentsMissing if not arguments else StatusCodes.BadTooManyArguments)
        text = arguments[0].Value if isinstance(arguments[0], ua.Variant) else arguments[0]
        try:
            if not isinstance(text, str):
                raise InvalidRequestError("Scenario: must be a String holding JSON")
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError as error:
                raise InvalidRequestError(f"Scenario: not JSON ({error})") from None
            view = await self._jobs.submit(shell_id, [parse_scenario(data)], self._server.user_name(user))
        except HubError as error:
            return _result(status_code_for_error(error), reason=str(error))
        return _result(StatusCodes.Good, output=view.id)

"""AAS Operations as OPC UA Methods (OPC 10000-4 §5.11.2, Call service; AAS Part 2 *InvokeOperation*).

Each Operation object has a method ``Invoke`` (planned by
:func:`aas_server.opcua.projection.plan_operation_method`) whose input arguments are the Operation's
input and in-output variables and whose output arguments its output and in-output variables. A call
checks the arguments' types, converts them to the ValueOnly form and runs the handler registered for
the Operation in the :class:`~aas_server.store.operations.OperationRegistry` (the same registry the
REST API uses); its outputs are converted back to the arguments' native types.

=============================================  ==============================
outcome                                        StatusCode
=============================================  ==============================
success                                        ``Good``
no handler registered                          ``BadNotImplemented``
too few / too many input arguments             ``BadArgumentsMissing`` / ``BadTooManyArguments``
an argument of another type, or not fitting    ``BadInvalidArgument`` (``BadTypeMismatch`` per argument)
the handler raised an error of the error tree  its status (as for writes: ``BadTypeMismatch``, ``BadTimeout``...)
the handler did not finish in time             ``BadTimeout``
anything else (logged)                         ``BadInternalError``
read-only or anonymous session                 ``BadUserAccessDenied`` (the whole Call request)
=============================================  ==============================

Left out for now: asynchronous invocation (a Call waits for the handler) and the Operation's
``clientTimeoutDuration``; the timeout is the projection's write timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from asyncua import ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import struct_from_binary
from basyx.aas import model

from aas_server.errors import HubError
from aas_server.opcua.projection import argument_to_value, value_to_argument
from aas_server.opcua.security import HubUser
from aas_server.opcua_common.status import status, status_code_for_error
from aas_server.opcua_common.variants import variant_type_for
from aas_server.store.operations import OperationRegistry
from aas_server.store.twin_store import TwinStore

_LOG = logging.getLogger(__name__)

MethodCallback = Callable[..., Awaitable[ua.CallMethodResult]]
_CALL_REQUEST = ua.NodeId(cast(Any, ua.ObjectIds.CallRequest_Encoding_DefaultBinary))


class OperationInvoker:
    """Runs Operation handlers for the ``Invoke`` methods of one projection."""

    def __init__(self, store: TwinStore, operations: OperationRegistry | None, timeout: float = 30.0) -> None:
        self._store = store
        self._operations = operations
        self._timeout = timeout

    def callback(self, submodel_id: str, id_short_path: str) -> MethodCallback:
        """The asyncua method callback of the Operation at ``id_short_path``."""

        async def invoke(parent: ua.NodeId, *arguments: ua.Variant) -> ua.CallMethodResult:
            return await self.invoke(submodel_id, id_short_path, list(arguments))

        return invoke

    async def invoke(self, submodel_id: str, id_short_path: str, arguments: list[ua.Variant]) -> ua.CallMethodResult:
        """Check ``arguments``, run the handler and return the call's result."""
        try:
            operation = self._store.element(submodel_id, id_short_path)
        except HubError:
            return _result(StatusCodes.BadMethodInvalid)
        if not isinstance(operation, model.Operation):
            return _result(StatusCodes.BadMethodInvalid)
        declared = [*operation.input_variable, *operation.in_output_variable]
        if len(arguments) < len(declared):
            return _result(StatusCodes.BadArgumentsMissing)
        if len(arguments) > len(declared):
            return _result(StatusCodes.BadTooManyArguments)
        inputs: dict[str, Any] = {}
        argument_codes: list[int] = []
        for variable, variant in zip(declared, arguments, strict=True):
            code = StatusCodes.Good
            try:
                if variant.is_array or variant.VariantType != _argument_type(variable):
                    raise TypeError(f"{variable.id_short} takes a {_argument_type(variable).name}")
                inputs[str(variable.id_short)] = argument_to_value(variable, variant)
            except (HubError, TypeError, ValueError):
                code = StatusCodes.BadTypeMismatch
            argument_codes.append(code)
        if any(code != StatusCodes.Good for code in argument_codes):
            return _result(StatusCodes.BadInvalidArgument, argument_codes)
        handler = self._operations.handler(submodel_id, id_short_path) if self._operations is not None else None
        if handler is None:
            return _result(StatusCodes.BadNotImplemented, argument_codes)
        try:
            async with asyncio.timeout(self._timeout):
                outputs = await handler(inputs)
        except Exception as error:
            _LOG.info("OPC UA call of %s %s failed: %s", submodel_id, id_short_path, error)
            return _result(status_code_for_error(error), argument_codes)
        try:
            output_arguments = [
                value_to_argument(variable, outputs.get(str(variable.id_short)))
                for variable in (*operation.output_variable, *operation.in_output_variable)
            ]
        except (HubError, TypeError, ValueError):
            _LOG.exception("the handler of %s %s returned outputs that do not fit", submodel_id, id_short_path)
            return _result(StatusCodes.BadInternalError, argument_codes)
        result = _result(StatusCodes.Good, argument_codes)
        result.OutputArguments = output_arguments
        return result


def _argument_type(variable: model.SubmodelElement) -> ua.VariantType:
    if isinstance(variable, model.Property):
        return variant_type_for(variable.value_type)
    return ua.VariantType.String


def _result(code: int, argument_codes: list[int] | None = None) -> ua.CallMethodResult:
    result = ua.CallMethodResult()
    result.StatusCode = status(code)
    result.InputArgumentResults = [status(argument_code) for argument_code in argument_codes or []]
    return result


class OperationCallRuleset(SimpleRoleRuleset):
    """asyncua's role rules, with calls of the projection's methods reserved to operators and admins.

    A Call request naming only standard methods (namespace 0, e.g. ``GetMonitoredItems``) stays open
    to every session; one naming any other method needs a session whose role may write.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def check_validity(self, user: User, action_type_id: ua.NodeId, body: Any) -> bool:
        if not super().check_validity(user, action_type_id, body):  # type: ignore[no-untyped-call]
            return False
        if action_type_id != _CALL_REQUEST or (isinstance(user, HubUser) and user.may_write_values):
            return True
        try:
            parameters = struct_from_binary(ua.CallParameters, body.copy())
        except Exception:
            return False
        return all(method.MethodId.NamespaceIndex == 0 for method in parameters.MethodsToCall)

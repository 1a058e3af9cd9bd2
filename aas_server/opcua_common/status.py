"""The hub's qualities and errors as OPC UA ``StatusCode`` values, and back (OPC 10000-4 §7.39, OPC 10000-8 §6.3.2).

The one place where the error tree (``aas_server.errors``) and ``Quality``/``QualityReason`` meet
OPC UA status codes (``ARCHITECTURE.md``, house rule 5): the server tells its clients a value's
quality as a status code, and the client connector reads a legacy server's status codes as quality.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from aas_server.errors import (
    AccessDeniedError,
    CapacityError,
    DeviceError,
    DeviceTimeoutError,
    InvalidRequestError,
    NotFoundError,
    NotWritableError,
    StorageFullError,
    TypeMismatchError,
)
from aas_server.model.events import Quality, QualityReason

_LOG = logging.getLogger(__name__)

_BAD_BY_REASON: dict[QualityReason, int] = {
    QualityReason.NONE: StatusCodes.Bad,
    QualityReason.NO_COMMUNICATION: StatusCodes.BadNoCommunication,
    QualityReason.COMMUNICATION_ERROR: StatusCodes.BadCommunicationError,
    QualityReason.SENSOR_FAILURE: StatusCodes.BadSensorFailure,
    QualityReason.OUT_OF_RANGE: StatusCodes.BadOutOfRange,
    QualityReason.DECODE_ERROR: StatusCodes.BadDecodingError,
    QualityReason.LAST_USABLE: StatusCodes.Bad,
    QualityReason.NOT_YET_READ: StatusCodes.BadWaitingForInitialData,
}

_UNCERTAIN_BY_REASON: dict[QualityReason, int] = {
    QualityReason.LAST_USABLE: StatusCodes.UncertainLastUsableValue,
    QualityReason.NOT_YET_READ: StatusCodes.UncertainInitialValue,
    QualityReason.SENSOR_FAILURE: StatusCodes.UncertainSensorNotAccurate,
    QualityReason.OUT_OF_RANGE: StatusCodes.UncertainEngineeringUnitsExceeded,
}

_REASON_OF_BAD: dict[int, QualityReason] = {
    StatusCodes.BadNoCommunication: QualityReason.NO_COMMUNICATION,
    StatusCodes.BadServerNotConnected: QualityReason.NO_COMMUNICATION,
    StatusCodes.BadNotConnected: QualityReason.NO_COMMUNICATION,
    StatusCodes.BadCommunicationError: QualityReason.COMMUNICATION_ERROR,
    StatusCodes.BadSensorFailure: QualityReason.SENSOR_FAILURE,
    StatusCodes.BadDeviceFailure: QualityReason.SENSOR_FAILURE,
    StatusCodes.BadOutOfRange: QualityReason.OUT_OF_RANGE,
    StatusCodes.BadDecodingError: QualityReason.DECODE_ERROR,
    StatusCodes.BadDataEncodingInvalid: QualityReason.DECODE_ERROR,
    StatusCodes.BadWaitingForInitialData: QualityReason.NOT_YET_READ,
}
_REASON_OF_UNCERTAIN: dict[int, QualityReason] = {code: reason for reason, code in _UNCERTAIN_BY_REASON.items()}

# Most specific class first: the first ``isinstance`` match wins.
_STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (TypeMismatchError, StatusCodes.BadTypeMismatch),
    (InvalidRequestError, StatusCodes.BadInvalidArgument),
    (NotWritableError, StatusCodes.BadNotWritable),
    (AccessDeniedError, StatusCodes.BadUserAccessDenied),
    (DeviceTimeoutError, StatusCodes.BadTimeout),
    (DeviceError, StatusCodes.BadNoCommunication),
    (NotFoundError, StatusCodes.BadNodeIdUnknown),
    (TimeoutError, StatusCodes.BadTimeout),
    (StorageFullError, StatusCodes.BadResourceUnavailable),
    (CapacityError, StatusCodes.BadTooManyOperations),
)


def status(code: int) -> ua.StatusCode:
    """A ``StatusCode`` object for a numeric code."""
    return ua.StatusCode(cast("ua.UInt32", code))


def is_bad(code: int) -> bool:
    """Whether a status code has Bad severity (OPC 10000-4 §7.39)."""
    return code & 0x80000000 != 0


def status_code_for(quality: Quality, reason: QualityReason) -> int:
    """The status code of a value with this quality and reason.

    GOOD is ``Good`` whatever the reason; UNCERTAIN and BAD pick the specific code of the reason
    (``BadNoCommunication``, ``UncertainLastUsableValue``, ...) or the bare severity.
    """
    if quality is Quality.GOOD:
        return StatusCodes.Good
    if quality is Quality.UNCERTAIN:
        return _UNCERTAIN_BY_REASON.get(reason, StatusCodes.Uncertain)
    return _BAD_BY_REASON[reason]


def status_code_for_error(error: BaseException) -> int:
    """The status code a client gets for a failed write; unexpected errors are logged as ``BadInternalError``."""
    for error_type, code in _STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return code
    _LOG.error("unexpected error in an OPC UA write", exc_info=error)
    return StatusCodes.BadInternalError


def status_name(code: int) -> str:
    """The symbolic name of a status code (``BadNotWritable``), or its hexadecimal value when unknown."""
    name = ua.StatusCode(cast(Any, code & 0xFFFF0000)).name
    return name if name and not name.startswith("Unknown") else f"0x{code:08X}"


def quality_of_status(code: int) -> tuple[Quality, QualityReason]:
    """Quality and reason of a value with status ``code``, the inverse of ``status_code_for``.

    The severity is in the top two bits; an uncertain code without a known reason is
    ``LAST_USABLE``, a bad one ``COMMUNICATION_ERROR``.
    """
    specific = code & 0xFFFF0000
    severity = code & 0xC0000000
    if severity == 0:
        return Quality.GOOD, QualityReason.NONE
    if severity == 0x40000000:
        return Quality.UNCERTAIN, _REASON_OF_UNCERTAIN.get(specific, QualityReason.LAST_USABLE)
    return Quality.BAD, _REASON_OF_BAD.get(specific, QualityReason.COMMUNICATION_ERROR)

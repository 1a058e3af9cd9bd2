"""The hub's one error tree.

Every failure a user can cause or observe is one of these classes. Each protocol edge maps them in
one place: ``api/errors.py`` to AAS ``Result`` messages and HTTP status codes, ``opcua/`` to OPC UA
``StatusCode`` values, the CLI to exit codes. Protocol libraries' own exceptions are translated to
these at the adapter boundary and never leak past it.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


class ConfigurationError(HubError):
    """A settings, twin-definition or mapping file is invalid.

    ``location`` names the place (``file:line:column`` or ``file: item.field``) so that the message
    alone lets a user fix it.
    """

    def __init__(self, message: str, location: str | None = None) -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.location = location
        self.reason = message


class MappingError(ConfigurationError):
    """A device mapping file is invalid (schema, cross-references or non-invertible write chain)."""


class DatabaseSchemaError(ConfigurationError):
    """A database file this hub cannot use: its schema version is newer than the code knows, or it is not
    a database of the hub at all. The file is left untouched; ``location`` names it."""


class NotFoundError(HubError):
    """An identifiable or submodel element that was asked for does not exist."""


class ConflictError(HubError):
    """An object with the same identifier or idShort already exists."""


class InvalidRequestError(HubError):
    """A request is malformed: bad identifier encoding, bad idShort path, unparsable body."""


class TypeMismatchError(InvalidRequestError):
    """A value does not fit the target element's ``valueType`` (or its device representation)."""


class NotWritableError(HubError):
    """The target exists but may not be written (a read-only mapped point, a non-value element)."""


class AccessDeniedError(HubError):
    """The caller is not allowed to do this."""


class CapacityError(HubError):
    """A configured bound on concurrent work is reached (``simulation.max_jobs``); the request may succeed later."""


class DeviceError(HubError):
    """A device could not be reached or refused a request; the value was not written."""

    def __init__(self, message: str, device: str | None = None) -> None:
        super().__init__(f"device {device!r}: {message}" if device else message)
        self.device = device


class DeviceTimeoutError(DeviceError):
    """A device did not answer in time."""


class PersistenceError(HubError):
    """The database could not store or load data."""


class StorageFullError(PersistenceError):
    """The database cannot grow: the disk is full or its size limit is reached. Nothing of the change was stored."""


class PackageError(InvalidRequestError):
    """An AASX, JSON or XML package cannot be read: unsafe, malformed, over a limit, or rejected in strict mode."""

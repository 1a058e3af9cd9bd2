"""The connectors of the protocol registry: which connector the hub starts for a device.

The registry itself (``aas_server.mapping.schema.PROTOCOLS``) lives below the edges, where the
mapping schema unions its device and point models; each entry names its connector module by its
import path, so that the mapping layer never imports a connector. This module resolves that name
(only modules of this package) and calls the module's ``create_connector`` and ``with_endpoint``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import cast

from aas_server.connectors.base import Connector, ConnectorContext, ConnectorModule
from aas_server.errors import ConfigurationError
from aas_server.mapping.schema import AnyDevice, AnyPoint, Protocol, protocol_named

_PACKAGE = "aas_server.connectors."


def connector_module(protocol: Protocol) -> ConnectorModule:
    """The connector module of a registry entry; ``ConfigurationError`` if it is not a module of this package."""
    if not protocol.connector.startswith(_PACKAGE):
        raise ConfigurationError(f"protocol {protocol.name!r}: connector {protocol.connector!r} is not a connector")
    module = importlib.import_module(protocol.connector)
    for function in ("create_connector", "with_endpoint"):
        if not callable(getattr(module, function, None)):
            raise ConfigurationError(f"protocol {protocol.name!r}: {protocol.connector} has no {function}()")
    return cast(ConnectorModule, module)


def create_connector(
    device: AnyDevice, points: Sequence[AnyPoint], context: ConnectorContext, endpoint: str | None = None
) -> Connector:
    """The connector of ``device`` (not started) for its points of the device's protocol.

    ``endpoint`` overrides where the device is reached (``HubSettings.device_endpoints``, the simulator).
    """
    protocol = protocol_named(device.protocol)
    module = connector_module(protocol)
    if endpoint:
        device = module.with_endpoint(device, endpoint)
    own = [point for point in points if isinstance(point, protocol.point_models)]
    return module.create_connector(device, own, context)

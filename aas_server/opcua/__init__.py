"""The OPC UA projection of the twin store (asyncua lives only in this package and the OPC UA client connector)."""

from aas_server.opcua.node_ids import node_id_for
from aas_server.opcua.server import OpcUaProjection

__all__ = ["OpcUaProjection", "node_id_for"]

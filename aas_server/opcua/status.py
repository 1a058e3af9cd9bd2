"""Status codes for the modules of this package that still import them from here.

The code is in ``aas_server.opcua_common.status``, shared with the OPC UA client connector.
"""

from aas_server.opcua_common.status import is_bad, status, status_code_for, status_code_for_error

__all__ = ["is_bad", "status", "status_code_for", "status_code_for_error"]

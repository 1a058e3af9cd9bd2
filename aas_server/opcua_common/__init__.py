"""OPC UA code shared by the hub's OPC UA server (``opcua/``) and its OPC UA client connector.

Status codes and qualities (``status``), values as variants (``variants``) and application
certificates (``certificates``) exist once, here. This package sits beside the two edges at layer
2, imports neither of them and no other edge, and is one of asyncua's homes (``tests/test_layers.py``).
"""

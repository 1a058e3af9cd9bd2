"""Device and point models of southbound protocols that live in a module of their own.

A protocol here is its models (this package), its connector (``aas_server.connectors``), its entry
in ``mapping.schema.PROTOCOLS`` and, where the templates allow, its AID binding. The models build on
``mapping.point_base``.
"""

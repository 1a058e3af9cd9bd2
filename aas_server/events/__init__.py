"""Northbound change events: edges that carry the hub's outbox to other systems (MQTT)."""

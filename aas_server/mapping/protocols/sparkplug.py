"""Sparkplug B (Eclipse Sparkplug 3.0): the device and point models of a mapping file.

A ``SparkplugDevice`` is the MQTT broker through which edge nodes publish (the hub acts as a
Sparkplug host application: it subscribes, and sends NCMD/DCMD). A ``SparkplugPoint`` names one
metric by its place in the Sparkplug namespace: group id, edge node id, device id (none for a metric
of the edge node itself) and metric name. The datatype and alias come from the node's birth
certificate (NBIRTH/DBIRTH), so the mapping file does not repeat them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from aas_server.mapping.point_base import PointBase, field_error
from aas_server.mapping.protocols.mqtt import BrokerDevice

_ID_PATTERN = r"^[^/+#\x00]+$"
"""A Sparkplug group, edge node or device id: one topic level, no wildcards (Sparkplug 3.0, 4.1.1)."""
_SparkplugId = Annotated[str, Field(pattern=_ID_PATTERN, max_length=256)]


class SparkplugDevice(BrokerDevice):
    """An MQTT broker carrying Sparkplug B; the hub is a host application of it (MQTT 3.1.1)."""

    protocol: Literal["sparkplug-b"]
    host_id: _SparkplugId | None = None
    """With it, the hub is the edge nodes' primary host application: it publishes its retained
    ``spBv1.0/STATE/<host_id>`` (online on connect, offline when it stops or, as its will, drops)."""
    max_payload: Annotated[int, Field(ge=64, le=256 * 1024 * 1024)] = 1024 * 1024
    """Bytes; a larger message is dropped, counted and logged (a flood guard)."""
    rebirth_interval: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 2.0
    """Least seconds between two rebirth requests (NCMD ``Node Control/Rebirth``) to one edge node."""


class SparkplugPoint(PointBase):
    """One Sparkplug B metric, by group id, edge node id, device id and metric name."""

    group_id: _SparkplugId
    """The Sparkplug group id (the second level of the topic)."""
    metric: Annotated[str, Field(min_length=1, max_length=1024)]
    """The metric's name as its birth certificate gives it (``Inputs/Temperature``)."""
    edge_node: _SparkplugId
    """The edge node id (the fourth level of the topic)."""
    sparkplug_device: _SparkplugId | None = None
    """The Sparkplug device id behind the edge node; none for a metric of the edge node itself."""

    @field_validator("metric")
    @classmethod
    def _no_nul(cls, metric: str) -> str:
        if "\0" in metric:
            raise ValueError("a metric name must not contain NUL")
        return metric

    @model_validator(mode="after")
    def _not_a_control_metric(self) -> SparkplugPoint:
        if self.writable and self.metric.startswith(("Node Control/", "Device Control/", "bdSeq")):
            field_error("metric", f"{self.metric!r} is a Sparkplug control metric and cannot be a set-point")
        return self

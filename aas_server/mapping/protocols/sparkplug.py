"""Sparkplug B (Eclipse Sparkplug 3.0): the device and point models of a mapping file.

A ``SparkplugDevice`` is the MQTT broker through which edge nodes publish (the hub acts as a
Sparkplug host application: it subscribes, and sends NCMD/DCMD). A ``SparkplugPoint`` names one
metric by its place in the Sparkplug namespace: group id, edge node id, device id (none for a metric
of the edge node itself) and metric name. The datatype and alias come from the node's birth
certificate (NBIRTH/DBIRTH), so the mapping file does not repeat them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from aas_server.mapping.point_base import NAME_PATTERN, PointBase, ReconnectBackoff, StrictModel, field_error

_ID_PATTERN = r"^[^/+#\x00]+$"
"""A Sparkplug group, edge node or device id: one topic level, no wildcards (Sparkplug 3.0, 4.1.1)."""
_SparkplugId = Annotated[str, Field(pattern=_ID_PATTERN, max_length=256)]


class SparkplugDevice(StrictModel):
    """An MQTT broker carrying Sparkplug B; the hub is a host application of it (MQTT 3.1.1)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]
    protocol: Literal["sparkplug-b"]
    shell: Annotated[str | None, Field(min_length=1)] = None
    """Id of the AAS of the device; it gets the AID and AIMC submodels that describe this wiring.

    Defaults to the shell that holds the submodel of the device's first point.
    """
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: Annotated[str | None, Field(max_length=128)] = None
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    """Name of an environment variable holding the password (keeps secrets out of mapping files)."""
    tls: bool = False
    ca_file: Path | None = None
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    timeout: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 5.0
    """Seconds to wait for a connection or for a command (NCMD/DCMD) to be sent."""
    host_id: _SparkplugId | None = None
    """With it, the hub is the edge nodes' primary host application: it publishes its retained
    ``spBv1.0/STATE/<host_id>`` (online on connect, offline when it stops or, as its will, drops)."""
    max_payload: Annotated[int, Field(ge=64, le=256 * 1024 * 1024)] = 1024 * 1024
    """Bytes; a larger message is dropped, counted and logged (a flood guard)."""
    rebirth_interval: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 2.0
    """Least seconds between two rebirth requests (NCMD ``Node Control/Rebirth``) to one edge node."""
    reconnect_backoff: ReconnectBackoff = ReconnectBackoff()

    @model_validator(mode="after")
    def _consistent_credentials(self) -> SparkplugDevice:
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        if (self.password is not None or self.password_env is not None) and self.username is None:
            raise ValueError("a password needs a username")
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file needs tls: true")
        return self


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

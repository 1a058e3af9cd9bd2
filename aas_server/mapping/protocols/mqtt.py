"""MQTT devices publishing JSON: the device and point models of a mapping file (MQTT 3.1.1)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from aas_server.mapping.json_paths import check_json_path
from aas_server.mapping.point_base import CredentialedDevice, PointBase, field_error


class TimestampFormat(enum.StrEnum):
    ISO8601 = "iso8601"
    EPOCH_SECONDS = "epoch-s"
    EPOCH_MILLISECONDS = "epoch-ms"


class BrokerDevice(CredentialedDevice):
    """An MQTT broker the hub connects to as a client: what plain MQTT and Sparkplug B devices share."""

    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: Annotated[str | None, Field(max_length=128)] = None
    tls: bool = False
    ca_file: Path | None = None
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    timeout: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 5.0
    """Seconds to wait for a connection, and for a write to be acknowledged (MQTT) or sent (Sparkplug B)."""

    @model_validator(mode="after")
    def _ca_file_with_tls(self) -> Self:
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file needs tls: true")
        return self


class MqttDevice(BrokerDevice):
    """An MQTT broker the hub subscribes to for device data (MQTT 3.1.1 or 5, QoS 1)."""

    protocol: Literal["mqtt"]
    qos: Literal[0, 1, 2] = 1
    stale_after: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None
    """Seconds without a message after which a point's value turns uncertain (last usable value)."""


class MqttPoint(PointBase):
    """A value in the JSON payloads of an MQTT topic."""

    topic: Annotated[str, Field(min_length=1, max_length=65535)]
    """Topic filter to subscribe to (``+`` and ``#`` wildcards allowed)."""
    value_path: str = "$"
    """JSONPath (``$.data.temperature``, ``$.values[0]``) of the value in the payload; ``$`` is the payload."""
    timestamp_path: str | None = None
    """JSONPath of the source timestamp in the payload; without it, the time the message arrived."""
    timestamp_format: TimestampFormat = TimestampFormat.ISO8601
    write_topic: str | None = None
    """For read-write points: the topic a new value is published to, as ``{"value": <value>}``."""

    @field_validator("value_path", "timestamp_path")
    @classmethod
    def _valid_json_path(cls, path: str | None) -> str | None:
        if path is not None:
            check_json_path(path)
        return path

    @field_validator("topic")
    @classmethod
    def _valid_topic_filter(cls, topic: str) -> str:
        levels = topic.split("/")
        for index, level in enumerate(levels):
            if "#" in level and (level != "#" or index != len(levels) - 1):
                raise ValueError(f"'#' must be a whole last level of the topic filter (MQTT 3.1.1, 4.7.1.2): {topic!r}")
            if "+" in level and level != "+":
                raise ValueError(f"'+' must be a whole level of the topic filter (MQTT 3.1.1, 4.7.1.3): {topic!r}")
            if "\0" in level:
                raise ValueError(f"a topic filter must not contain NUL (MQTT 3.1.1, 4.7.3): {topic!r}")
        return topic

    @model_validator(mode="after")
    def _write_topic(self) -> MqttPoint:
        if self.writable and self.write_topic is None:
            field_error("write_topic", "a read-write MQTT point needs write_topic")
        if self.write_topic is not None and ("+" in self.write_topic or "#" in self.write_topic):
            field_error("write_topic", "write_topic must not contain wildcards")
        return self

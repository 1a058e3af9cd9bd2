"""OPC UA client devices: the device, variable and method point models of a mapping file."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from aas_server.config import SecurityPolicyName
from aas_server.mapping.point_base import CredentialedDevice, PointBase, field_error

OpcUaSecurityPolicy = SecurityPolicyName
"""A device's security policy: the names the hub's own OPC UA server offers (settings ``security_policies``)."""


class OpcUaSecurityMode(enum.StrEnum):
    NONE = "none"
    SIGN = "sign"
    SIGN_AND_ENCRYPT = "sign-and-encrypt"


class Acquisition(enum.StrEnum):
    """How an OPC UA client connector obtains a variable's value."""

    SUBSCRIBE = "subscribe"
    POLL = "poll"


class OpcUaDevice(CredentialedDevice):
    """A (legacy) OPC UA server the hub reads and writes as a client."""

    protocol: Literal["opcua"]
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://.+")]
    security_policy: OpcUaSecurityPolicy = OpcUaSecurityPolicy.NONE
    security_mode: OpcUaSecurityMode = OpcUaSecurityMode.NONE
    certificate: Path | None = None
    """The hub's client certificate (DER or PEM) for a secure channel; generated under the data dir if absent."""
    private_key: Path | None = None
    server_certificate: Path | None = None
    """The server's certificate, when it cannot be taken from the endpoint description."""
    timeout: Annotated[float, Field(gt=0, le=120, allow_inf_nan=False)] = 4.0
    acquisition: Acquisition = Acquisition.SUBSCRIBE
    """Default for the device's variable points."""
    publishing_interval: Annotated[float, Field(ge=0.01, le=3600, allow_inf_nan=False)] = 0.1
    """Seconds between notifications of a subscription (OPC 10000-4, 5.13.2)."""

    @model_validator(mode="after")
    def _consistent_security(self) -> OpcUaDevice:
        plain = self.security_policy is OpcUaSecurityPolicy.NONE
        if plain != (self.security_mode is OpcUaSecurityMode.NONE):
            raise ValueError("security_policy None goes with security_mode none, and only with it")
        return self


class OpcUaVariablePoint(PointBase):
    """A variable of an OPC UA server, by NodeId or by browse path from the Objects folder."""

    node_id: str | None = None
    """NodeId in the string form ``ns=2;s=Boiler.Temperature`` (or ``nsu=<uri>;...``)."""
    browse_path: str | None = None
    """Qualified browse names from Objects, ``/``-separated: ``2:Boiler/2:Temperature`` (``<ns>:`` optional)."""
    acquisition: Acquisition | None = None
    """Defaults to the device's."""
    sampling_interval: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 0.1
    """Seconds; the server samples the variable this often for a subscription (0: as fast as it can)."""
    poll_interval: Annotated[float, Field(ge=0.01, le=3600, allow_inf_nan=False)] = 1.0
    """Seconds between reads when the point is polled."""

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaVariablePoint:
        if (self.node_id is None) == (self.browse_path is None):
            field_error("node_id", "give exactly one of node_id or browse_path")
        return self


class OpcUaMethodPoint(PointBase):
    """An OPC UA method that implements the target Operation element (inputs and outputs in order)."""

    object_node_id: str | None = None
    method_node_id: str | None = None
    object_browse_path: str | None = None
    method_browse_name: str | None = None
    """With ``object_browse_path``: the method's browse name (``2:Start``) on that object."""
    timeout: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 10.0

    @model_validator(mode="after")
    def _addressed(self) -> OpcUaMethodPoint:
        by_id = self.object_node_id is not None and self.method_node_id is not None
        by_path = self.object_browse_path is not None and self.method_browse_name is not None
        if by_id == by_path:
            field_error(
                "method_node_id", "give object_node_id and method_node_id, or object_browse_path and method_browse_name"
            )
        numeric = [f for f in ("unit", "limits", "deadband", "filter", "enum", "rate_limit") if getattr(self, f)]
        if numeric or not self.is_identity:
            field_error("method_node_id", "a method point takes no normalisation")
        return self

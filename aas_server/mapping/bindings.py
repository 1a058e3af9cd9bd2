"""The store binding of a mapped point: its source, writability, unit, how often it is read and its range.

The OPC UA projection shows these as the variable's ``AccessLevel``, ``EngineeringUnits``,
``MinimumSamplingInterval`` and ``EURange`` (OPC 10000-3 §5.6.2, OPC 10000-8 §5.3.2).
"""

from __future__ import annotations

from aas_server.mapping.schema import Acquisition, AnyPoint, MappingFile, OpcUaVariablePoint
from aas_server.store.twin_store import ElementBinding


def sampling_interval(point: AnyPoint, mapping: MappingFile) -> float | None:
    """Seconds between two reads of the point's device value; ``None`` when the device pushes values (MQTT).

    A polled point: its ``poll_interval``; an OPC UA variable under subscription: its ``sampling_interval``.
    """
    if isinstance(point, OpcUaVariablePoint):
        device = mapping.device(point.device)
        acquisition = point.acquisition or getattr(device, "acquisition", Acquisition.SUBSCRIBE)
        return point.sampling_interval if acquisition is Acquisition.SUBSCRIBE else point.poll_interval
    interval = getattr(point, "poll_interval", None)
    return float(interval) if interval is not None else None


def value_range(point: AnyPoint) -> tuple[float, float] | None:
    """The point's ``limits`` when they give both ``min`` and ``max`` (in the target unit)."""
    limits = getattr(point, "limits", None)
    if limits is None or limits.min is None or limits.max is None:
        return None
    return (float(limits.min), float(limits.max))


def element_binding(point: AnyPoint, mapping: MappingFile) -> ElementBinding:
    """The binding of the Property a (non-method) point targets."""
    return ElementBinding(
        f"device:{point.device}",
        point.writable,
        point.engineering_unit,
        sampling_interval=sampling_interval(point, mapping),
        value_range=value_range(point),
    )

"""The device sample path's fast lanes (issue 12): what they skip must not change what a client sees.

The engine builds integers proven in range at load without a per-sample range check; the store
assigns a value of exactly the Property's valueType without basyx's setter; the bus appends to
each subscriber inline. Each test drives the real engine, store and bus and checks the values,
types, qualities, events and cache versions that REST and OPC UA show.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from basyx.aas import model
from basyx.aas.model import datatypes

from aas_server.mapping import codecs
from aas_server.mapping.engine import MappingEngine
from aas_server.mapping.schema import DataType, parse_mapping
from aas_server.model.events import Quality, QualityReason, RawSample, ValueChanged
from aas_server.store.bus import ChangeBus
from aas_server.store.twin_store import TwinStore

SUBMODEL = "urn:test:sample-path:sm"
TIME = datetime(2026, 1, 1, tzinfo=UTC)

POINTS: dict[str, tuple[str, Any]] = {
    # name: (Modbus data type, valueType of the target Property)
    "Signed": ("int16", datatypes.Int),  # the whole int16 range fits xs:int: built without a check
    "Unsigned": ("uint16", datatypes.UnsignedShort),  # fits exactly
    "Wide": ("int32", datatypes.Short),  # does not fit: checked per sample
    "Narrow": ("uint16", datatypes.Short),  # neither
    "Count": ("uint32", datatypes.UnsignedInt),
}


def _store_and_sink() -> tuple[TwinStore, Any]:
    document = {
        "devices": [
            {"name": "plc", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": 502, "addressing": "zero-based"}
        ],
        "points": [
            {
                "name": name,
                "device": "plc",
                "table": "holding_register",
                "address": 2 * index,
                "data_type": data_type,
                "target": {"submodel": SUBMODEL, "path": name},
            }
            for index, (name, (data_type, _)) in enumerate(POINTS.items())
        ],
    }
    store = TwinStore()
    store.add(
        model.Submodel(
            SUBMODEL,
            id_short="Line",
            submodel_element=[model.Property(name, value_type) for name, (_, value_type) in POINTS.items()],
        )
    )
    engine = MappingEngine(parse_mapping(document, "typed.yaml"), {name: kind for name, (_, kind) in POINTS.items()})
    return store, engine.sink(store.apply)


def _feed(sink: Any, point: str, value: int) -> None:
    sink(RawSample("plc", point, codecs.encode(DataType(POINTS[point][0]), value), TIME))


@pytest.mark.parametrize(
    ("point", "value"),
    [
        ("Signed", -32768),
        ("Signed", 32767),
        ("Unsigned", 0),
        ("Unsigned", 65535),
        ("Wide", -32768),
        ("Wide", 32767),
        ("Narrow", 32767),
        ("Count", 4_294_967_295),
    ],
)
def test_integers_up_to_the_ends_of_their_range_reach_the_property_as_its_value_type(point: str, value: int) -> None:
    store, sink = _store_and_sink()
    events = store.bus.subscribe("test")
    _feed(sink, point, value)
    state = store.state(SUBMODEL, point)
    assert state is not None
    assert (type(state.value), state.value, state.quality) == (POINTS[point][1], value, Quality.GOOD)
    element = store.element(SUBMODEL, point)
    assert isinstance(element, model.Property)
    assert type(element.value) is POINTS[point][1]
    (change,) = events.get_nowait_all()
    assert isinstance(change, ValueChanged)
    assert (type(change.value), change.value) == (POINTS[point][1], value)


@pytest.mark.parametrize(("point", "value"), [("Wide", 32768), ("Wide", -40_000), ("Narrow", 40_000)])
def test_an_integer_the_value_type_cannot_hold_is_bad_and_the_last_value_stays(point: str, value: int) -> None:
    store, sink = _store_and_sink()
    _feed(sink, point, 12)
    events = store.bus.subscribe("test")
    _feed(sink, point, value)
    state = store.state(SUBMODEL, point)
    assert state is not None
    assert (state.value, state.quality, state.reason) == (12, Quality.BAD, QualityReason.OUT_OF_RANGE)
    (change,) = events.get_nowait_all()
    assert isinstance(change, ValueChanged)
    assert (change.value, change.quality) == (12, Quality.BAD)


def _double_and_short_store() -> TwinStore:
    store = TwinStore()
    store.add(
        model.Submodel(
            SUBMODEL,
            id_short="Line",
            submodel_element=[model.Property("Level", float, 0.0), model.Property("Small", datatypes.Short, 0)],
        )
    )
    return store


def test_the_store_keeps_a_typed_value_and_casts_any_other_through_basyx() -> None:
    store = _double_and_short_store()
    typed = 1.5
    assert store.apply(ValueChanged(SUBMODEL, "Level", typed, TIME))
    state = store.state(SUBMODEL, "Level")
    assert state is not None
    assert state.value is typed
    # a roll-up or restore may hand a plain int to an xs:short: basyx's setter makes it one, as before
    assert store.apply(ValueChanged(SUBMODEL, "Small", 7, TIME, origin="rollup"))
    small = store.state(SUBMODEL, "Small")
    assert small is not None
    assert (type(small.value), small.value) == (datatypes.Short, 7)


@pytest.mark.parametrize(
    ("path", "value", "error", "reason"),
    [
        ("Small", 70_000, ValueError, "out of the allowed range"),
        ("Level", 3, TypeError, "cannot be trivially casted"),
    ],
)
def test_a_value_basyx_refuses_leaves_the_property_its_version_and_the_bus_untouched(
    path: str, value: Any, error: type[Exception], reason: str
) -> None:
    store = _double_and_short_store()
    events = store.bus.subscribe("test")
    version = store.content_version(SUBMODEL)
    with pytest.raises(error, match=reason):
        store.apply(ValueChanged(SUBMODEL, path, value, TIME, origin="rollup"))
    state = store.state(SUBMODEL, path)
    assert state is not None
    assert state.value == 0
    assert store.content_version(SUBMODEL) == version
    assert events.get_nowait_all() == []


async def test_content_versions_count_value_changes_and_never_repeat_after_a_delete() -> None:
    store = _double_and_short_store()
    seen = [store.content_version(SUBMODEL)]
    store.apply(ValueChanged(SUBMODEL, "Level", 2.5, TIME))
    seen.append(store.content_version(SUBMODEL))
    store.apply(ValueChanged(SUBMODEL, "Level", 2.5, TIME))  # no change: a cached body stays valid
    assert store.content_version(SUBMODEL) == seen[-1]
    await store.delete(SUBMODEL)
    seen.append(store.content_version(SUBMODEL))
    fresh = _double_and_short_store().submodel(SUBMODEL)
    store.add(fresh)
    seen.append(store.content_version(SUBMODEL))
    store.apply(ValueChanged(SUBMODEL, "Level", 2.5, TIME))  # the new submodel's Property held 0.0
    seen.append(store.content_version(SUBMODEL))
    assert seen == sorted(set(seen)), f"versions must only grow: {seen}"


async def test_a_subscriber_that_falls_behind_loses_its_oldest_events_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus: ChangeBus[int] = ChangeBus()
    slow = bus.subscribe("slow", maxsize=4)
    with caplog.at_level(logging.INFO, logger="aas_server.store.bus"):
        for number in range(10):
            bus.publish(number)
        assert (slow.get_nowait_all(), slow.dropped) == ([6, 7, 8, 9], 6)
        bus.publish(10)  # below half full again: caught up
        bus.publish(11)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "subscriber slow falls behind: dropping its oldest events",
        "subscriber slow caught up (6 events dropped so far)",
    ]
    assert slow.get_nowait_all() == [10, 11]
    waiting = asyncio.ensure_future(slow.get())
    await asyncio.sleep(0)
    bus.publish(12)
    assert await asyncio.wait_for(waiting, 1) == 12

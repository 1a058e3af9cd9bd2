"""The twin store: idShort paths, typed values, the change bus and the write path."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from basyx.aas import model
from basyx.aas.model import datatypes

from aas_server.errors import (
    ConflictError,
    DeviceError,
    InvalidRequestError,
    NotFoundError,
    NotWritableError,
    PersistenceError,
    TypeMismatchError,
)
from aas_server.model import paths, values
from aas_server.model.events import Quality, QualityReason, ValueChanged
from aas_server.model.units import lookup_unit
from aas_server.store.bus import ChangeBus
from aas_server.store.twin_store import ElementBinding, ModelChanged, TwinStore

SUBMODEL_ID = "urn:test:sm:1"


def _submodel() -> model.Submodel:
    return model.Submodel(
        SUBMODEL_ID,
        id_short="Operational",
        submodel_element=[
            model.Property("Speed", float, 10.0),
            model.Property("Count", datatypes.Int, 3),
            model.SubmodelElementCollection("Motor", value=[model.Property("Temperature", float, 20.5)]),
            model.SubmodelElementList(
                "Readings",
                model.Property,
                value=[model.Property(None, float, 1.0), model.Property(None, float, 2.0)],
                value_type_list_element=float,
            ),
        ],
    )


def _value(element: model.SubmodelElement) -> Any:
    assert isinstance(element, model.Property)
    return element.value


class _Recorder:
    def __init__(self, error: Exception | None = None) -> None:
        self.values: list[Any] = []
        self.error = error

    async def __call__(self, value: Any) -> None:
        if self.error is not None:
            raise self.error
        self.values.append(value)


class _Journal:
    """Records what the store journals; ``fail`` makes the next journal call raise like a full disk."""

    def __init__(self) -> None:
        self.changes: list[ValueChanged] = []
        self.saved: list[str] = []
        self.deleted: list[str] = []
        self.fail = False

    def _check(self) -> None:
        if self.fail:
            raise PersistenceError("disk full")

    async def persist_values(self, changes: Any) -> None:
        self._check()
        self.changes.extend(changes)

    async def save_identifiables(self, identifiables: Any) -> None:
        self._check()
        self.saved.extend(identifiable.id for identifiable in identifiables)

    async def delete_identifiable(self, identifier: str) -> None:
        self._check()
        self.deleted.append(identifier)


def test_paths_parse_and_resolve_nested_and_list_elements() -> None:
    submodel = _submodel()
    assert paths.parse_id_short_path("Motor.Temperature") == ("Motor", "Temperature")
    assert paths.parse_id_short_path("Readings[1]") == ("Readings", 1)
    assert _value(paths.resolve(submodel, "Motor.Temperature")) == 20.5
    assert _value(paths.resolve(submodel, "Readings[1]")) == 2.0
    assert paths.path_of(paths.resolve(submodel, "Readings[1]")) == "Readings[1]"
    assert [path for path, _ in paths.walk(submodel)] == [
        "Speed", "Count", "Motor", "Motor.Temperature", "Readings", "Readings[0]", "Readings[1]",
    ]  # fmt: skip


@pytest.mark.parametrize("bad", ["", "Motor..Temperature", "Motor.", "1abc", "Readings[x]", "Readings[1", "A B"])
def test_malformed_paths_are_rejected_with_the_position(bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        paths.parse_id_short_path(bad)


def test_missing_elements_are_not_found() -> None:
    with pytest.raises(NotFoundError):
        paths.resolve(_submodel(), "Motor.Pressure")
    with pytest.raises(NotFoundError):
        paths.resolve(_submodel(), "Readings[5]")


@pytest.mark.parametrize(
    ("value_type", "value", "expected"),
    [
        (float, 3, 3.0),
        (float, "2.5", 2.5),
        (datatypes.Int, 7.0, 7),
        (datatypes.Int, "42", 42),
        (bool, True, True),
        (bool, "true", True),
        (str, "text", "text"),
        (datatypes.UnsignedInt, 4_000_000_000, 4_000_000_000),
    ],
)
def test_coerce_accepts_exact_values(value_type: Any, value: Any, expected: Any) -> None:
    result = values.coerce(value_type, value)
    assert result == expected
    assert isinstance(result, value_type)


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        (datatypes.Int, 3.5),  # would truncate
        (datatypes.Short, 70_000),  # out of range
        (datatypes.UnsignedInt, -1),
        (float, True),  # a boolean is not a number
        (bool, 1),
        (float, "warm"),
        (datatypes.Int, float("nan")),
        (str, 5),
    ],
)
def test_coerce_refuses_what_does_not_fit(value_type: Any, value: Any) -> None:
    with pytest.raises(TypeMismatchError):
        values.coerce(value_type, value)


def test_value_only_json_form_keeps_numbers_native() -> None:
    assert values.to_json_value(datatypes.Int(5)) == 5  # type: ignore[no-untyped-call]
    assert values.to_json_value(2.5) == 2.5
    assert values.to_json_value(True) is True
    assert values.to_json_value(datatypes.Date(2024, 1, 2)) == "2024-01-02"


async def test_bus_fans_out_and_drops_oldest_for_a_slow_subscriber() -> None:
    bus: ChangeBus[int] = ChangeBus()
    fast = bus.subscribe("fast", maxsize=10)
    slow = bus.subscribe("slow", maxsize=3)
    for number in range(5):
        bus.publish(number)
    assert fast.get_nowait_all() == [0, 1, 2, 3, 4]
    assert slow.get_nowait_all() == [2, 3, 4]
    assert slow.dropped == 2
    slow.close()
    bus.publish(9)
    assert await asyncio.wait_for(fast.get(), 1) == 9
    assert slow.get_nowait_all() == []


def test_store_rejects_a_duplicate_identifier_and_announces_additions() -> None:
    store = TwinStore()
    subscription = store.bus.subscribe("test")
    store.add(_submodel())
    with pytest.raises(ConflictError):
        store.add(_submodel())
    events = subscription.get_nowait_all()
    assert len(events) == 1
    assert isinstance(events[0], ModelChanged)
    assert events[0].identifiable_id == SUBMODEL_ID


def test_apply_publishes_changes_only_and_keeps_the_last_value_when_bad() -> None:
    store = TwinStore()
    store.add(_submodel())
    subscription = store.bus.subscribe("test")
    time = datetime(2026, 1, 1, tzinfo=UTC)
    assert store.apply(ValueChanged(SUBMODEL_ID, "Speed", 12.0, time))
    assert not store.apply(ValueChanged(SUBMODEL_ID, "Speed", 12.0, time))
    assert store.apply(ValueChanged(SUBMODEL_ID, "Speed", None, time, Quality.BAD, QualityReason.NO_COMMUNICATION))
    events = [event for event in subscription.get_nowait_all() if isinstance(event, ValueChanged)]
    assert [(event.value, event.quality) for event in events] == [(12.0, Quality.GOOD), (12.0, Quality.BAD)]
    assert _value(store.element(SUBMODEL_ID, "Speed")) == 12.0
    state = store.state(SUBMODEL_ID, "Speed")
    assert state is not None
    assert state.quality is Quality.BAD
    assert state.reason is QualityReason.NO_COMMUNICATION


async def test_write_value_goes_to_the_device_then_the_journal_then_the_model() -> None:
    journal = _Journal()
    store = TwinStore(journal=journal)
    store.add(_submodel())
    device = _Recorder()
    store.bind(SUBMODEL_ID, "Speed", ElementBinding("device:plc", True, lookup_unit("RPM")), device)
    change = await store.write_value(SUBMODEL_ID, "Speed", 1500, origin="rest")
    assert device.values == [1500.0]
    assert [c.value for c in journal.changes] == [1500.0]
    assert _value(store.element(SUBMODEL_ID, "Speed")) == 1500.0
    assert change.origin == "rest"


async def test_a_failed_device_write_changes_nothing() -> None:
    journal = _Journal()
    store = TwinStore(journal=journal)
    store.add(_submodel())
    store.bind(SUBMODEL_ID, "Speed", ElementBinding("device:plc", True), _Recorder(DeviceError("offline", "plc")))
    with pytest.raises(DeviceError):
        await store.write_value(SUBMODEL_ID, "Speed", 1500, origin="opcua")
    assert _value(store.element(SUBMODEL_ID, "Speed")) == 10.0
    assert journal.changes == []


async def test_writes_are_type_checked_and_read_only_points_refused() -> None:
    store = TwinStore()
    store.add(_submodel())
    store.bind(SUBMODEL_ID, "Count", ElementBinding("device:plc", False))
    with pytest.raises(TypeMismatchError):
        await store.write_value(SUBMODEL_ID, "Speed", "fast", origin="rest")
    with pytest.raises(NotWritableError):
        await store.write_value(SUBMODEL_ID, "Count", 4, origin="rest")
    with pytest.raises(NotWritableError):
        await store.write_value(SUBMODEL_ID, "Motor", 4, origin="rest")
    await store.write_value(SUBMODEL_ID, "Motor.Temperature", 21, origin="rest")
    assert _value(store.element(SUBMODEL_ID, "Motor.Temperature")) == 21.0


def _events(subscription: Any) -> list[tuple[str, str, str | None]]:
    return [
        (event.kind.value, event.identifiable_id, event.id_short_path)
        for event in subscription.get_nowait_all()
        if isinstance(event, ModelChanged)
    ]


async def test_identifiables_are_created_replaced_and_deleted_with_events_and_journal() -> None:
    journal = _Journal()
    store = TwinStore(journal=journal)
    subscription = store.bus.subscribe("test")
    await store.create(_submodel())
    with pytest.raises(ConflictError):
        await store.create(_submodel())
    replacement = _submodel()
    replacement.id_short = "Renamed"
    version = store.version
    await store.replace(replacement)
    assert store.submodel(SUBMODEL_ID).id_short == "Renamed"
    assert store.version > version
    await store.delete(SUBMODEL_ID)
    with pytest.raises(NotFoundError):
        store.submodel(SUBMODEL_ID)
    assert store.state(SUBMODEL_ID, "Speed") is None
    assert journal.saved == [SUBMODEL_ID, SUBMODEL_ID]
    assert journal.deleted == [SUBMODEL_ID]
    assert _events(subscription) == [
        ("created", SUBMODEL_ID, None),
        ("updated", SUBMODEL_ID, None),
        ("deleted", SUBMODEL_ID, None),
    ]


async def test_elements_are_created_replaced_and_deleted_in_place() -> None:
    journal = _Journal()
    store = TwinStore(journal=journal)
    await store.create(_submodel())
    subscription = store.bus.subscribe("test")
    version = store.content_version(SUBMODEL_ID)
    path = await store.create_element(SUBMODEL_ID, "Motor", model.Property("Pressure", float, 1.5))
    assert path == "Motor.Pressure"
    assert _value(store.element(SUBMODEL_ID, "Motor.Pressure")) == 1.5
    state = store.state(SUBMODEL_ID, "Motor.Pressure")
    assert state is not None
    assert state.value == 1.5
    assert await store.create_element(SUBMODEL_ID, "Readings", model.Property(None, float, 3.0)) == "Readings[2]"
    with pytest.raises(ConflictError):
        await store.create_element(SUBMODEL_ID, None, model.Property("Speed", float, 0.0))
    with pytest.raises(InvalidRequestError):  # a list of xs:double cannot take an xs:int
        await store.create_element(SUBMODEL_ID, "Readings", model.Property(None, datatypes.Int, 3))
    await store.replace_element(SUBMODEL_ID, "Count", model.Property("Count", datatypes.Int, 99))
    submodel = store.submodel(SUBMODEL_ID)
    assert [element.id_short for element in submodel.submodel_element] == ["Speed", "Count", "Motor", "Readings"]
    await store.delete_element(SUBMODEL_ID, "Motor.Temperature")
    with pytest.raises(NotFoundError):
        store.element(SUBMODEL_ID, "Motor.Temperature")
    assert store.content_version(SUBMODEL_ID) > version
    assert _events(subscription) == [
        ("created", SUBMODEL_ID, "Motor.Pressure"),
        ("created", SUBMODEL_ID, "Readings[2]"),
        ("updated", SUBMODEL_ID, "Count"),
        ("deleted", SUBMODEL_ID, "Motor.Temperature"),
    ]


async def test_a_failed_journal_rolls_the_model_back() -> None:
    journal = _Journal()
    store = TwinStore(journal=journal)
    await store.create(_submodel())
    journal.fail = True
    with pytest.raises(PersistenceError):
        await store.create_element(SUBMODEL_ID, None, model.Property("Pressure", float, 1.5))
    with pytest.raises(PersistenceError):
        await store.delete_element(SUBMODEL_ID, "Motor")
    with pytest.raises(PersistenceError):
        await store.delete(SUBMODEL_ID)
    submodel = store.submodel(SUBMODEL_ID)
    assert [element.id_short for element in submodel.submodel_element] == ["Speed", "Count", "Motor", "Readings"]
    assert _value(store.element(SUBMODEL_ID, "Motor.Temperature")) == 20.5


async def test_device_bound_elements_cannot_be_removed_by_model_changes() -> None:
    store = TwinStore(journal=_Journal())
    await store.create(_submodel())
    store.bind(SUBMODEL_ID, "Motor.Temperature", ElementBinding("device:plc", False))
    with pytest.raises(ConflictError):
        await store.delete_element(SUBMODEL_ID, "Motor")
    with pytest.raises(ConflictError):
        await store.replace_element(SUBMODEL_ID, "Motor", model.SubmodelElementCollection("Motor"))
    with pytest.raises(ConflictError):
        await store.delete(SUBMODEL_ID)
    await store.replace_element(
        SUBMODEL_ID,
        "Motor",
        model.SubmodelElementCollection("Motor", value=[model.Property("Temperature", float, 1.0)]),
    )
    # the device owns a bound Property's value: the replacement keeps the live one (W2, docs/security.md)
    assert _value(store.element(SUBMODEL_ID, "Motor.Temperature")) == 20.5


async def test_annotations_of_a_relationship_can_be_added_and_deleted() -> None:
    store = TwinStore(journal=_Journal())
    reference = model.ModelReference((model.Key(model.KeyTypes.SUBMODEL, SUBMODEL_ID),), model.Submodel)
    relation = model.AnnotatedRelationshipElement(
        "Feeds", reference, reference, annotation=[model.Property("Note", str, "checked")]
    )
    submodel = _submodel()
    submodel.submodel_element.add(relation)
    await store.create(submodel)
    assert await store.create_element(SUBMODEL_ID, "Feeds", model.Property("Since", str, "2026")) == "Feeds.Since"
    await store.delete_element(SUBMODEL_ID, "Feeds.Note")
    with pytest.raises(NotFoundError):
        store.element(SUBMODEL_ID, "Feeds.Note")
    assert _value(store.element(SUBMODEL_ID, "Feeds.Since")) == "2026"

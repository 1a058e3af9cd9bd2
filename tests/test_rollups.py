"""Roll-ups on the twin hierarchy: the functions and quality rules, the service following the bus, the demo plant."""

from __future__ import annotations

import decimal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from basyx.aas import model

from aas_server.api.app import create_app
from aas_server.api.serialization import encode_identifier
from aas_server.cli import demo_settings_path
from aas_server.config import HubSettings, RollupFunction, RollupSettings, load_settings
from aas_server.errors import ConfigurationError, NotWritableError, TypeMismatchError
from aas_server.model.events import Quality, QualityReason, ValueChanged
from aas_server.model.twins import build_environment, load_twins
from aas_server.runtime.hub import Hub
from aas_server.runtime.rollups import ORIGIN, RollupService, start_rollups
from aas_server.store.bus import Subscription
from aas_server.store.rollups import PartValue, fit_value, part_problem, roll_up, target_problem
from aas_server.store.twin_store import ElementBinding, StoreEvent, TwinStore
from tests.support import ROOT, eventually, wait_until

Client = TestClient[web.Request, web.Application]

MACHINES = "urn:test:sm:machines"
LINE = "urn:test:sm:line"
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

GOOD, UNCERTAIN, BAD = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def good(value: Any, seconds: float = 0.0) -> PartValue:
    return PartValue(value, GOOD, at(seconds))


# --- the functions (aas_server.store.rollups) ----------------------------------------------------


@pytest.mark.parametrize(
    ("function", "values", "expected"),
    [
        (RollupFunction.SUM, [1.5, 2.0, 3.25], 6.75),
        (RollupFunction.SUM, [2**62, 2**62, 1], 2**63 + 1),  # integers stay exact
        (RollupFunction.AVERAGE, [1.0, 2.0, 6.0], 3.0),
        (RollupFunction.AVERAGE, [1, 2], 1.5),
        (RollupFunction.AVERAGE, [decimal.Decimal("0.1"), decimal.Decimal("0.2")], decimal.Decimal("0.15")),
        (RollupFunction.MINIMUM, [120, 118, 130], 118),
        (RollupFunction.MAXIMUM, [-4.5, -1.0, -7.0], -1.0),
        (RollupFunction.COUNT_TRUE, [True, False, True], 2),
        (RollupFunction.FRACTION_TRUE, [True, False, False, True], 0.5),
        (RollupFunction.WORST_QUALITY, [1.0, "text", True], "good"),
    ],
)
def test_each_function_over_good_parts(function: RollupFunction, values: list[Any], expected: Any) -> None:
    result = roll_up(function, [good(value, index) for index, value in enumerate(values)])
    assert result.value == expected
    assert type(result.value) is type(expected)
    assert (result.quality, result.reason) == (GOOD, QualityReason.NONE)
    assert result.source_time == at(len(values) - 1)


def test_a_bad_part_is_left_out_and_makes_the_result_uncertain_with_the_time_of_the_parts_used() -> None:
    parts = [good(1.0, 1), PartValue(5.0, BAD, at(9), QualityReason.NO_COMMUNICATION), good(2.0, 3)]
    result = roll_up(RollupFunction.SUM, parts)
    assert (result.value, result.quality, result.reason) == (3.0, UNCERTAIN, QualityReason.NO_COMMUNICATION)
    assert result.source_time == at(3)
    average = roll_up(RollupFunction.FRACTION_TRUE, [good(True), PartValue(False, BAD, at(1)), good(False)])
    assert (average.value, average.quality) == (0.5, UNCERTAIN)


def test_an_uncertain_part_is_used_but_makes_the_result_uncertain() -> None:
    parts = [good(10.0, 1), PartValue(4.0, UNCERTAIN, at(2), QualityReason.LAST_USABLE)]
    result = roll_up(RollupFunction.MAXIMUM, parts)
    assert (result.value, result.quality, result.reason) == (10.0, UNCERTAIN, QualityReason.LAST_USABLE)
    assert result.source_time == at(2)


def test_all_parts_bad_is_bad_with_their_shared_reason_and_no_value() -> None:
    parts = [PartValue(1.0, BAD, at(1), QualityReason.NO_COMMUNICATION)] * 2
    result = roll_up(RollupFunction.AVERAGE, parts)
    assert (result.value, result.quality, result.reason, result.source_time) == (
        None,
        BAD,
        QualityReason.NO_COMMUNICATION,
        at(1),
    )
    mixed = [PartValue(1.0, BAD, at(1), QualityReason.NO_COMMUNICATION), PartValue(None, BAD)]
    assert roll_up(RollupFunction.SUM, mixed).reason is QualityReason.NONE


def test_worst_quality_names_the_worst_part_and_is_itself_good() -> None:
    uncertain = PartValue(3, UNCERTAIN, at(5), QualityReason.NOT_YET_READ)
    bad = PartValue(None, BAD, at(2), QualityReason.NO_COMMUNICATION)
    assert roll_up(RollupFunction.WORST_QUALITY, [good(1), uncertain]).value == "uncertain"
    result = roll_up(RollupFunction.WORST_QUALITY, [good(1), uncertain, bad])
    assert (result.value, result.quality, result.source_time) == ("bad", GOOD, at(5))


def test_numeric_parts_count_as_true_above_a_threshold() -> None:
    speeds = [good(1450.0), good(40.0), good(0.0), good(True)]
    assert roll_up(RollupFunction.COUNT_TRUE, speeds, true_above=100.0).value == 2
    assert roll_up(RollupFunction.FRACTION_TRUE, speeds, true_above=100.0).value == 0.5


def test_results_are_fitted_to_the_target_value_type() -> None:
    assert fit_value(model.datatypes.Int, 2.5) == 2  # rounded half to even
    assert fit_value(model.datatypes.Int, 2.6) == 3
    assert fit_value(float, 3) == 3.0
    assert fit_value(decimal.Decimal, 0.25) == decimal.Decimal("0.25")
    with pytest.raises(TypeMismatchError):
        fit_value(model.datatypes.UnsignedShort, 70_000)
    with pytest.raises(TypeMismatchError):
        fit_value(model.datatypes.Int, float("inf"))


def test_value_types_that_suit_each_function() -> None:
    assert target_problem(RollupFunction.SUM, model.datatypes.Int) is None
    assert target_problem(RollupFunction.COUNT_TRUE, model.datatypes.UnsignedInt) is None
    assert target_problem(RollupFunction.COUNT_TRUE, float) is None
    assert target_problem(RollupFunction.FRACTION_TRUE, float) is None
    assert "fraction 0..1" in str(target_problem(RollupFunction.FRACTION_TRUE, model.datatypes.Int))
    assert "numeric" in str(target_problem(RollupFunction.AVERAGE, bool))
    assert target_problem(RollupFunction.WORST_QUALITY, str) is None
    assert "xs:string" in str(target_problem(RollupFunction.WORST_QUALITY, float))
    assert part_problem(RollupFunction.MINIMUM, model.datatypes.Long, None) is None
    assert "numeric parts" in str(part_problem(RollupFunction.MINIMUM, bool, None))
    assert part_problem(RollupFunction.COUNT_TRUE, bool, None) is None
    assert part_problem(RollupFunction.COUNT_TRUE, float, 100.0) is None
    assert "true_above (not set)" in str(part_problem(RollupFunction.COUNT_TRUE, float, None))
    assert part_problem(RollupFunction.WORST_QUALITY, str, None) is None


# --- the service on a store ----------------------------------------------------------------------


def _property(id_short: str, value_type: Any, value: Any) -> model.Property:
    return model.Property(id_short, value_type, value)


def build_store() -> TwinStore:
    """Two machines' live values (currents and speeds device-fed) and a line with roll-up targets."""
    machines = model.Submodel(
        MACHINES,
        id_short="Machines",
        submodel_element=[
            _property("Current1", float, 3.0),
            _property("Current2", float, 2.5),
            _property("Speed1", float, 1450.0),
            _property("Speed2", float, 1200.0),
            _property("Running1", bool, True),
            _property("Bottles1", model.datatypes.UnsignedInt, 100),
            _property("Bottles2", model.datatypes.UnsignedInt, 90),
            _property("Setpoint1", float, 10.0),
            _property("Setpoint2", float, 20.0),
            model.SubmodelElementCollection("Group", value=[_property("Inner", float, 1.0)]),
        ],
    )
    line = model.Submodel(
        LINE,
        id_short="Line",
        submodel_element=[
            _property("Total", float, 0.0),
            _property("PlantTotal", float, 0.0),
            _property("Smallest", model.datatypes.UnsignedInt, 0),
            _property("Availability", float, 0.0),
            _property("Running", model.datatypes.Int, 0),
            _property("Worst", str, ""),
            _property("HighestSetpoint", float, 0.0),
            _property("Spare", float, 0.0),
        ],
    )
    store = TwinStore()
    store.add_all([machines, line])
    for path in ("Current1", "Current2", "Speed1", "Speed2"):
        element = store.bind(MACHINES, path, ElementBinding("device:plc", writable=False))
        device_value(store, path, element.value)  # the device's first sample: good from now on
    return store


def device_value(
    store: TwinStore,
    path: str,
    value: Any,
    quality: Quality = GOOD,
    reason: QualityReason = QualityReason.NONE,
    seconds: float = 0.0,
) -> None:
    store.apply(ValueChanged(MACHINES, path, value, at(seconds), quality, reason, origin="device:plc"))


def rollup(target: str, function: str, *parts: str, true_above: float | None = None) -> RollupSettings:
    """A roll-up of ``parts`` (``Machines`` paths, or ``line:<path>``) into ``target`` of the line."""

    def address(path: str) -> dict[str, str]:
        if path.startswith("line:"):
            return {"submodel": LINE, "path": path.removeprefix("line:")}
        return {"submodel": MACHINES, "path": path}

    return RollupSettings.model_validate(
        {
            "target": {"submodel": LINE, "path": target},
            "function": function,
            "parts": [address(part) for part in parts],
            "true_above": true_above,
        }
    )


LINE_ROLLUPS = [
    rollup("PlantTotal", "sum", "line:Total", "Setpoint1"),  # a roll-up of a roll-up, listed before it
    rollup("Total", "sum", "Current1", "Current2"),
    rollup("Smallest", "minimum", "Bottles1", "Bottles2"),
    rollup("Availability", "fraction-true", "Speed1", "Speed2", true_above=100.0),
    rollup("Running", "count-true", "Speed1", "Speed2", "Running1", true_above=100.0),
    rollup("Worst", "worst-quality", "Current1", "Current2", "Speed1", "Speed2"),
    rollup("HighestSetpoint", "maximum", "Setpoint1", "Setpoint2"),
]


def rollup_events(subscription: Subscription[StoreEvent], path: str | None = None) -> list[ValueChanged]:
    """The roll-up results published on the bus so far (of the target at ``path``, if given)."""
    return [
        event
        for event in subscription.get_nowait_all()
        if isinstance(event, ValueChanged) and event.origin == ORIGIN and path in (None, event.id_short_path)
    ]


def value(store: TwinStore, path: str) -> Any:
    state = store.state(LINE, path)
    assert state is not None
    return state.value


@pytest.fixture
def store() -> TwinStore:
    return build_store()


@pytest.fixture
async def service(store: TwinStore) -> AsyncIterator[RollupService]:
    async with RollupService(store, LINE_ROLLUPS) as running:
        yield running


async def test_roll_ups_are_computed_at_start_and_their_targets_are_read_only(
    store: TwinStore, service: RollupService
) -> None:
    assert [value(store, path) for path in ("Total", "PlantTotal", "Smallest", "Availability", "Running")] == [
        5.5,
        15.5,
        90,
        1.0,
        3,
    ]
    assert value(store, "Worst") == "good"
    total = store.state(LINE, "Total")
    assert total is not None
    assert (total.quality, total.source_time) == (GOOD, at(0))
    binding = store.binding(LINE, "Total")
    assert binding is not None
    assert (binding.source, binding.writable) == ("rollup:sum", False)
    with pytest.raises(NotWritableError, match="rollup:sum"):
        await store.write_value(LINE, "Total", 1.0, origin="rest")


async def test_a_part_change_reaches_the_target_and_the_roll_ups_built_on_it_through_the_bus(
    store: TwinStore, service: RollupService
) -> None:
    observer = store.bus.subscribe("observer")
    setpoint = store.state(MACHINES, "Setpoint1")
    assert setpoint is not None
    device_value(store, "Current1", 4.25, seconds=7)
    await wait_until(lambda: value(store, "PlantTotal") == 16.75, what="PlantTotal 16.75")
    assert value(store, "Total") == 6.75
    published = rollup_events(observer)
    assert [(event.id_short_path, event.value, event.quality, event.source_time) for event in published] == [
        ("Total", 6.75, GOOD, at(7)),
        ("PlantTotal", 16.75, GOOD, max(at(7), setpoint.source_time)),  # the latest of its parts
    ]


async def test_a_failing_part_makes_its_roll_ups_uncertain_and_the_worst_quality_bad(
    store: TwinStore, service: RollupService
) -> None:
    device_value(store, "Speed2", None, BAD, QualityReason.NO_COMMUNICATION, seconds=3)
    await wait_until(lambda: value(store, "Worst") == "bad", what="worst quality bad")
    availability = store.state(LINE, "Availability")
    assert availability is not None
    assert (availability.value, availability.quality, availability.reason) == (
        1.0,
        UNCERTAIN,
        QualityReason.NO_COMMUNICATION,
    )
    device_value(store, "Speed1", None, BAD, QualityReason.NO_COMMUNICATION, seconds=4)
    await wait_until(lambda: availability.quality is BAD, what="availability bad")
    assert availability.value == 1.0  # the last value is kept
    device_value(store, "Speed1", 0.0, seconds=5)
    device_value(store, "Speed2", 1300.0, seconds=6)
    await wait_until(lambda: availability.quality is GOOD, what="availability good again")
    assert (availability.value, availability.source_time, value(store, "Worst")) == (0.5, at(6), "good")


async def test_a_burst_of_part_changes_is_coalesced_and_the_final_state_wins(
    store: TwinStore, service: RollupService
) -> None:
    observer = store.bus.subscribe("observer")
    for step in range(500):
        device_value(store, "Current1", float(step), seconds=step)
        device_value(store, "Current2", float(step) / 2, seconds=step)
    await wait_until(lambda: value(store, "Total") == 499 + 249.5, what="the final total")
    await wait_until(lambda: value(store, "PlantTotal") == 499 + 249.5 + 10.0, what="the final plant total")
    totals = rollup_events(observer, "Total")
    assert len(totals) == 1
    assert totals[0].source_time == at(499)


async def test_a_result_that_does_not_fit_its_value_type_is_bad_keeps_its_value_and_recovers(
    store: TwinStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with RollupService(store, [rollup("Smallest", "sum", "Bottles1", "Bottles2")]):
        smallest = store.state(LINE, "Smallest")
        assert smallest is not None
        assert (smallest.value, smallest.quality) == (190, GOOD)
        await store.write_value(MACHINES, "Bottles1", 2**32 - 1, origin="rest")  # the sum exceeds xs:unsignedInt
        await wait_until(lambda: smallest.quality is BAD, what="an out-of-range sum")
        assert (smallest.value, smallest.reason) == (190, QualityReason.OUT_OF_RANGE)
        assert "does not fit xs:unsignedInt" in caplog.text
        await store.write_value(MACHINES, "Bottles1", 10, origin="rest")
        await wait_until(lambda: smallest.quality is GOOD, what="a sum in range again")
        assert smallest.value == 100


async def test_a_part_written_over_rest_changes_the_target_read_over_rest(
    store: TwinStore, service: RollupService
) -> None:
    def url(submodel_id: str, path: str) -> str:
        return f"/api/v3.0/submodels/{encode_identifier(submodel_id)}/submodel-elements/{path}/$value"

    client: Client = TestClient(TestServer(create_app(store)))
    async with client:
        response = await client.patch(url(MACHINES, "Setpoint2"), json=42.5)
        assert response.status == 204, await response.text()

        async def highest() -> tuple[Any, str]:
            response = await client.get(url(LINE, "HighestSetpoint"))
            assert response.status == 200
            return (await response.json())["HighestSetpoint"], response.headers["X-AAS-Quality"]

        assert await eventually(highest, lambda result: result == (42.5, "good"), within=2.0)
        refused = await client.patch(url(LINE, "HighestSetpoint"), json=1.0)
        assert refused.status == 403
        assert "rollup:maximum" in await refused.text()


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rollups", "message"),
    [
        ([rollup("Nope", "sum", "Current1")], "rollups[0].target: 'Nope' in submodel 'urn:test:sm:line'"),
        (
            [rollup("Total", "sum", "Current1"), rollup("Spare", "sum", "Current1", "Nope")],
            "rollups[1].parts[1]: 'Nope' in submodel 'urn:test:sm:machines'",
        ),
        (
            [rollup("Total", "sum", "Current1", "Group")],
            "rollups[0].parts[1]: 'Group' is a SubmodelElementCollection, not a Property",
        ),
        (
            [rollup("Total", "sum", "Current1", "Group.Inner", "Current1")],
            "rollups[0].parts[2]: 'Current1' is listed twice (parts[0])",
        ),
        ([rollup("Worst", "sum", "Current1")], "rollups[0].target: 'Worst' is xs:string; sum gives a number"),
        (
            [rollup("Running", "fraction-true", "Running1")],
            "rollups[0].target: 'Running' is xs:int; fraction-true gives a fraction 0..1",
        ),
        ([rollup("Total", "worst-quality", "Current1")], "rollups[0].target: 'Total' is xs:double; worst-quality"),
        ([rollup("Total", "average", "Running1")], "rollups[0].parts[0]: 'Running1' is xs:boolean; average needs"),
        (
            [rollup("Running", "count-true", "Running1", "Speed1")],
            "rollups[0].parts[1]: 'Speed1' is xs:double; count-true counts boolean parts, or numeric parts above "
            "true_above (not set)",
        ),
        (
            [rollup("Total", "sum", "Current1", true_above=1.0)],
            "rollups[0].true_above: applies to count-true and fraction-true only, not sum",
        ),
    ],
)
def test_invalid_roll_ups_are_rejected_naming_the_place_and_the_reason(
    store: TwinStore, rollups: list[RollupSettings], message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        RollupService(store, rollups)
    assert message in str(raised.value)


def test_a_device_fed_target_and_a_target_used_twice_are_rejected_together(store: TwinStore) -> None:
    rollups = [
        rollup("Total", "sum", "Current1"),
        rollup("Total", "sum", "Current2"),
        RollupSettings.model_validate(
            {
                "target": {"submodel": MACHINES, "path": "Speed1"},
                "function": "maximum",
                "parts": [{"submodel": MACHINES, "path": "Speed2"}],
            }
        ),
    ]
    with pytest.raises(ConfigurationError) as raised:
        RollupService(store, rollups)
    assert str(raised.value).splitlines() == [
        "rollups[1].target: 'Total' is the target of rollups[0] already",
        "rollups[2].target: 'Speed1' is fed by device:plc; a roll-up target must not be device-bound",
    ]


def test_a_target_of_a_running_roll_up_cannot_be_taken_by_another(store: TwinStore, service: RollupService) -> None:
    with pytest.raises(ConfigurationError, match=r"rollups\[0\]\.target: 'Total' is the target of a running roll-up"):
        RollupService(store, [rollup("Total", "maximum", "Current1")])


@pytest.mark.parametrize(
    ("rollups", "message"),
    [
        (
            [rollup("Total", "sum", "line:Total", "Current1")],
            "rollups[0].parts[0]: is the target of rollups[0]; roll-ups form a cycle: rollups[0] -> rollups[0]",
        ),
        (
            [
                rollup("Total", "sum", "Current1", "line:Spare"),
                rollup("PlantTotal", "sum", "line:Total"),
                rollup("Spare", "sum", "line:PlantTotal"),
            ],
            "rollups[1].parts[0]: is the target of rollups[0]; "
            "roll-ups form a cycle: rollups[0] -> rollups[1] -> rollups[2] -> rollups[0]",
        ),
    ],
)
def test_cycles_of_roll_ups_are_rejected(store: TwinStore, rollups: list[RollupSettings], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        RollupService(store, rollups)
    assert str(raised.value) == message


async def test_no_roll_ups_start_no_service(store: TwinStore) -> None:
    async with AsyncExitStack() as stack:
        assert await start_rollups(stack, HubSettings(), store) is None


# --- the demo plant ------------------------------------------------------------------------------

DEMO = "urn:aas-server:demo:sm:"


def demo_key(twin: str, path: str) -> tuple[str, str]:
    return (f"{DEMO}{twin}:operational-data", path)


async def test_the_demo_roll_ups_follow_the_plant() -> None:
    settings = load_settings(demo_settings_path())
    assert len(settings.rollups) == 6
    store = TwinStore()
    store.add_all(build_environment(load_twins(ROOT / "examples" / "bottling-line" / "plant.yaml")))

    def feed(twin: str, path: str, new: Any, quality: Quality = GOOD) -> None:
        store.apply(ValueChanged(*demo_key(twin, path), new, at(1), quality, origin="device:bottling-plc"))

    def current(twin: str, path: str) -> Any:
        state = store.state(*demo_key(twin, path))
        assert state is not None
        return state.value

    async with AsyncExitStack() as stack:
        service = await start_rollups(stack, settings, store)
        assert service is not None
        assert current("plant", "WorstQuality") == "good"
        feed("filler-motor", "RotationalSpeed", 1450.0)
        feed("capper-motor", "RotationalSpeed", 20.0)
        feed("filler-motor", "MotorCurrent", 9.5)
        feed("capper-motor", "MotorCurrent", 1.25)
        feed("filler", "BottlesFilled", 1_250_120)
        feed("capper", "BottlesCapped", 1_250_117)
        feed("filler-temperature-sensor", "Temperature", None, BAD)
        await wait_until(lambda: current("plant", "WorstQuality") == "bad", what="the plant's worst quality")
        assert current("plant", "Availability") == 0.5
        assert current("bottling-process", "MachinesRunning") == 1
        assert current("plant", "TotalMotorCurrent") == 10.75
        assert current("bottling-process", "BottlesProduced") == 1_250_117
        assert current("plant", "BottlesProduced") == 1_250_117


# --- the demo hub (needs start_rollups wired into runtime/hub.py) --------------------------------


def demo_hub_settings(data_dir: Path) -> HubSettings:
    settings = load_settings(demo_settings_path())
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "rest": settings.rest.model_copy(update={"port": 0}),
            "opcua": settings.opcua.model_copy(update={"port": 0}),
            "simulator": settings.simulator.model_copy(update={"port": 0, "update_interval": 0.05}),
            "security": settings.security.model_copy(update={"enabled": False}),
        }
    )


async def test_the_plant_availability_over_rest_follows_the_machines_of_the_demo_hub(tmp_path: Path) -> None:
    async with Hub(demo_hub_settings(tmp_path)) as hub, aiohttp.ClientSession() as http:
        assert hub.rest_url is not None
        assert hub.simulator is not None

        def url(twin: str, path: str) -> str:
            submodel_id, _ = demo_key(twin, path)
            return f"{hub.rest_url}/submodels/{encode_identifier(submodel_id)}/submodel-elements/{path}/$value"

        async def read(twin: str, path: str) -> tuple[Any, str]:
            async with http.get(url(twin, path)) as response:
                assert response.status == 200, await response.text()
                return (await response.json())[path], response.headers["X-AAS-Quality"]

        async def becomes(twin: str, path: str, expected: Any, within: float) -> None:
            await eventually(lambda: read(twin, path), lambda result: result == (expected, "good"), within)

        await becomes("plant", "Availability", 1.0, within=10.0)
        await becomes("plant", "WorstQuality", "good", within=10.0)

        # The operator stops the line: the simulated drives run down, the machines stop.
        async with http.patch(url("bottling-process", "LineRunning"), json=False) as response:
            assert response.status == 204, await response.text()
        await becomes("plant", "Availability", 0.0, within=15.0)
        await becomes("bottling-process", "MachinesRunning", 0, within=2.0)
        async with http.patch(url("bottling-process", "LineRunning"), json=True) as response:
            assert response.status == 204, await response.text()
        await becomes("plant", "Availability", 1.0, within=10.0)

        # One machine stops (its drive's speed register drops to 0): half the plant is available.
        hub.simulator.pause()
        hub.simulator.write_point("capper-motor.RotationalSpeed", 0.0)
        await becomes("plant", "Availability", 0.5, within=5.0)

        async def currents() -> tuple[Any, ...]:
            return (
                await read("plant", "TotalMotorCurrent"),
                await read("filler-motor", "MotorCurrent"),
                await read("capper-motor", "MotorCurrent"),
            )

        def adds_up(result: tuple[Any, ...]) -> bool:
            (total, quality), (filler, _), (capper, _) = result
            return bool(quality == "good" and total == pytest.approx(filler + capper) and total > 0)

        await eventually(currents, adds_up, within=5.0)
        async with http.patch(url("plant", "Availability"), json=1.0) as response:
            assert response.status == 403

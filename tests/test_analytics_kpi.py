"""Machine states and ISO 22400-2 KPIs: a scripted night against KPIs computed by hand from the script.

The hand computations below read the script (times, states, counter values) and do plain arithmetic;
they use nothing from the implementation but its inputs.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from aas_server.analytics.kpi import Kpis, Window, WindowKind, compute, roll_up, window
from aas_server.analytics.states import (
    Break,
    CounterSpec,
    CounterState,
    FaultWord,
    MachineState,
    MachineStateModel,
    Sample,
    Shift,
    ShiftCalendar,
    SignalRef,
    SpeedSignal,
    StateRecorder,
)

BERLIN = ZoneInfo("Europe/Berlin")
SUBMODEL = "urn:example:filler:operational-data"
SPEED = SignalRef(submodel_id=SUBMODEL, id_short_path="Speed")
FAULT = SignalRef(submodel_id=SUBMODEL, id_short_path="FaultCode")
PRODUCED = SignalRef(submodel_id=SUBMODEL, id_short_path="ProducedCount")
SCRAP = SignalRef(submodel_id=SUBMODEL, id_short_path="ScrapCount")
IDEAL_CYCLE_SECONDS = 3.0


def calendar() -> ShiftCalendar:
    return ShiftCalendar(
        timezone="Europe/Berlin",
        shifts=(
            Shift(
                name="early",
                start=time(6),
                end=time(14),
                breaks=(Break(name="lunch", start=time(10), end=time(10, 30)),),
            ),
            Shift(
                name="late",
                start=time(14),
                end=time(22),
                breaks=(Break(name="dinner", start=time(18), end=time(18, 30)),),
            ),
            Shift(
                name="night",
                start=time(22),
                end=time(6),
                breaks=(Break(name="night break", start=time(2), end=time(2, 30)),),
            ),
        ),
    )


def filler(name: str = "urn:example:filler") -> MachineStateModel:
    return MachineStateModel(
        asset=name,
        calendar=calendar(),
        ideal_cycle_time=IDEAL_CYCLE_SECONDS,
        speed=SpeedSignal(signal=SPEED, running_above=10.0),
        fault=FaultWord(signal=FAULT, reasons={3: "jam", 5: "low pressure"}),
        produced=CounterSpec(signal=PRODUCED, modulus=65536),
        scrap=CounterSpec(signal=SCRAP),
    )


def local(day: int, hour: int, minute: int = 0) -> datetime:
    """A wall-clock time in Berlin on a day of March 2026 (UTC+1 until the 29th)."""
    return datetime(2026, 3, day, hour, minute, tzinfo=BERLIN)


# The scripted night of 10 to 11 March 2026: (time, signal, value, good quality).
SCRIPT: list[tuple[datetime, SignalRef, object, bool]] = [
    (local(10, 21, 50), SPEED, 0.0, True),
    (local(10, 21, 50), FAULT, 0, True),
    (local(10, 21, 50), PRODUCED, 65000, True),
    (local(10, 21, 50), SCRAP, 10, True),
    (local(10, 22), SPEED, 120.0, True),
    (local(10, 23), PRODUCED, 464, True),  # wrapped: 65000 + 1000 - 65536
    (local(10, 23, 30), FAULT, 3, True),  # a jam
    (local(10, 23, 30), SPEED, 0.0, True),
    (local(10, 23, 45), FAULT, 0, True),  # cleared, not yet restarted
    (local(10, 23, 50), SPEED, 120.0, True),
    (local(11, 0, 30), PRODUCED, 1364, True),  # +900, past midnight
    (local(11, 0, 30), SCRAP, 30, True),  # +20
    (local(11, 1), SPEED, 120.0, False),  # the device is unreachable
    (local(11, 1), FAULT, 0, False),
    (local(11, 1), PRODUCED, 1364, False),
    (local(11, 1, 20), SPEED, 120.0, True),  # back
    (local(11, 1, 20), FAULT, 0, True),
    (local(11, 1, 20), PRODUCED, 1664, True),  # +300 made during the outage
    (local(11, 1, 40), PRODUCED, 50, True),  # the PLC restarted its counter: a reset, 50 since
    (local(11, 2), SPEED, 0.0, True),  # stopped for the break
    (local(11, 2, 30), SPEED, 120.0, True),
    (local(11, 3), PRODUCED, 1050, True),  # +1000
    (local(11, 3), FAULT, 9, True),  # a code the table does not know
    (local(11, 3, 20), FAULT, 0, True),
    (local(11, 4, 29), PRODUCED, 2350, True),  # +1300
    (local(11, 5, 15), PRODUCED, 3050, True),  # +700
    (local(11, 5, 15), SCRAP, 40, True),  # +10
]
NOW = local(11, 5, 30)


def recorded(
    name: str = "urn:example:filler", script: list[tuple[datetime, SignalRef, object, bool]] = SCRIPT
) -> StateRecorder:
    recorder = StateRecorder(filler(name), started=script[0][0])
    for moment, signal, value, good in script:
        recorder.add(Sample(signal, value, moment, good))
    return recorder


def kpis_over(span: Window, recorder: StateRecorder) -> Kpis:
    return compute(recorder.model, recorder.timeline(NOW), recorder.increments, span)


def test_current_shift_across_midnight_matches_the_hand_computation() -> None:
    span = window(WindowKind.CURRENT_SHIFT, calendar(), NOW)
    assert span is not None
    assert span.kind == "current_shift:night"
    assert span.start == local(10, 22)
    result = kpis_over(span, recorded())

    minutes = 60
    planned_operation = (7 * 60 + 30) * minutes  # 22:00 -> 05:30
    planned_down = 30 * minutes  # night break 02:00 -> 02:30
    running = (90 + 70 + 40 + 30 + 130) * minutes  # 22:00-23:30, 23:50-01:00, 01:20-02:00, 02:30-03:00, 03:20-05:30
    jam, code_9 = 15 * minutes, 20 * minutes  # 23:30-23:45, 03:00-03:20
    idle = 5 * minutes  # 23:45-23:50
    unknown = 20 * minutes  # 01:00-01:20
    produced = 1000 + 900 + 50 + 1000 + 1300 + 700  # the 300 counted across the outage are not attributed
    scrap = 20 + 10
    good = produced - scrap
    availability = running / (planned_operation - planned_down - unknown)
    effectiveness = IDEAL_CYCLE_SECONDS * produced / running
    quality = good / produced

    assert result.planned_operation_time == timedelta(seconds=planned_operation)
    assert result.planned_downtime == timedelta(seconds=planned_down)
    assert result.actual_production_time == timedelta(seconds=running)
    assert result.actual_downtime == timedelta(seconds=jam + code_9)
    assert result.idle_time == timedelta(seconds=idle)
    assert result.unknown_time == timedelta(seconds=unknown)
    assert result.downtime_by_reason == {"jam": timedelta(seconds=jam), "fault code 9": timedelta(seconds=code_9)}
    assert result.produced_quantity == produced
    assert result.good_quantity == good
    assert result.unattributed_quantity == 300
    assert result.failure_events == 2
    assert result.availability == pytest.approx(availability, rel=1e-12)
    assert result.availability == pytest.approx(0.9, rel=1e-12)
    assert result.effectiveness == pytest.approx(effectiveness, rel=1e-12)
    assert result.quality_ratio == pytest.approx(quality, rel=1e-12)
    assert result.oee == pytest.approx(availability * effectiveness * quality, rel=1e-12)
    assert result.mtbf == timedelta(seconds=running / 2)
    assert result.mttr == timedelta(seconds=(jam + code_9) / 2)
    assert result.coverage == pytest.approx(
        (planned_operation - planned_down - unknown) / (planned_operation - planned_down)
    )


def test_last_hour_and_last_day_windows_cross_shift_changes() -> None:
    recorder = recorded()
    hour = kpis_over(Window("last_hour", NOW - timedelta(hours=1), NOW), recorder)
    assert hour.actual_production_time == timedelta(hours=1)
    assert hour.produced_quantity == 700  # the 04:29 sample lies before the window
    assert hour.good_quantity == 690
    assert hour.effectiveness == pytest.approx(IDEAL_CYCLE_SECONDS * 700 / 3600, rel=1e-12)

    day_window = window(WindowKind.LAST_24_HOURS, calendar(), NOW)
    assert day_window is not None
    day = kpis_over(day_window, recorder)
    minutes = 60
    # 05:30 on the 10th to 05:30 on the 11th lies inside shifts throughout (night, early, late, night);
    # the lunch, dinner and night breaks fall inside it.
    planned_operation = 24 * 60 * minutes
    planned_down = 3 * 30 * minutes
    # The recorder started at 21:50 (late shift): idle 21:50-22:00, then the night as above.
    running = (90 + 70 + 40 + 30 + 130) * minutes
    idle = (10 + 5) * minutes
    down = (15 + 20) * minutes
    unknown = planned_operation - planned_down - running - idle - down
    assert unknown == ((16 * 60 + 20 - 60) + 20) * minutes  # 05:30-21:50 less two breaks, and the outage
    assert day.planned_operation_time == timedelta(seconds=planned_operation)
    assert day.planned_downtime == timedelta(seconds=planned_down)
    assert day.idle_time == timedelta(seconds=idle)
    assert day.unknown_time == timedelta(seconds=unknown)
    assert day.availability == pytest.approx(running / (running + idle + down), rel=1e-12)


def test_shift_windows_are_wall_clock_times_in_the_calendar_zone() -> None:
    shifts = calendar()
    at_half_past_midnight = shifts.current_shift(local(11, 0, 30))
    assert at_half_past_midnight is not None
    assert (at_half_past_midnight.name, at_half_past_midnight.start) == ("night", local(10, 22))
    assert at_half_past_midnight.end == local(11, 6)
    # Summer time starts at 02:00 on 29 March 2026: the night shift of the 28th has 7 real hours.
    dst_night = shifts.current_shift(datetime(2026, 3, 29, 4, 0, tzinfo=BERLIN))
    assert dst_night is not None
    assert dst_night.end - dst_night.start == timedelta(hours=7)
    weekdays_only = ShiftCalendar(
        shifts=(Shift(name="day", start=time(8), end=time(16), weekdays=frozenset(range(5))),)
    )
    assert weekdays_only.current_shift(datetime(2026, 3, 14, 9, tzinfo=ZoneInfo("UTC"))) is None  # a Saturday
    assert window(WindowKind.CURRENT_SHIFT, weekdays_only, datetime(2026, 3, 14, 9, tzinfo=ZoneInfo("UTC"))) is None


def test_counter_wrap_and_reset_rules() -> None:
    wrapping = CounterState(CounterSpec(signal=PRODUCED, modulus=65536))
    assert wrapping.update(65530, True) is None  # the first value is the baseline
    assert wrapping.update(4, True) == 10  # wrapped: 4 + 65536 - 65530
    assert wrapping.update(20004, True) == 20000
    assert wrapping.update(3, True) == 3  # a drop of 20001 is more than half the modulus: a reset
    limited = CounterState(CounterSpec(signal=PRODUCED, modulus=65536, max_increment=100))
    limited.update(65500, True)
    assert limited.update(63, True) == 99
    limited.update(65500, True)
    assert limited.update(200, True) == 200  # 236 across a wrap exceeds max_increment: a reset
    plain = CounterState(CounterSpec(signal=PRODUCED))
    plain.update(500, True)
    assert plain.update(499, True) == 499  # without a modulus every drop is a reset
    assert plain.update(0, False) is None  # a bad sample counts nothing and keeps the last good value
    assert plain.update(510, True) == 11


def test_outage_is_unknown_and_its_parts_unattributed() -> None:
    recorder = recorded()
    outage = [period for period in recorder.timeline(NOW) if period.state is MachineState.UNKNOWN]
    assert [(period.start, period.end, period.reason) for period in outage] == [
        (local(11, 1), local(11, 1, 20), "no data")
    ]
    across = [item for item in recorder.increments if item.across_gap]
    assert [(item.time, item.quantity) for item in across] == [(local(11, 1, 20), 300)]


def test_roll_up_sums_times_and_counts_rather_than_averaging_ratios() -> None:
    first = recorded("urn:example:filler-1")
    # The second filler ran all night with no fault and counted 6000 parts, 0 scrap.
    second_script: list[tuple[datetime, SignalRef, object, bool]] = [
        (local(10, 21, 50), SPEED, 120.0, True),
        (local(10, 21, 50), FAULT, 0, True),
        (local(10, 21, 50), PRODUCED, 0, True),
        (local(10, 21, 50), SCRAP, 0, True),
        (local(11, 5), PRODUCED, 6000, True),
    ]
    second = recorded("urn:example:filler-2", second_script)
    span = Window("current_shift", local(10, 22), NOW)
    parts = [kpis_over(span, first), kpis_over(span, second)]
    line = roll_up("urn:example:line", parts)

    busy = (7 * 60) * 60  # 22:00-05:30 less the break, each
    running = [(90 + 70 + 40 + 30 + 130) * 60, busy]
    produced = [4950, 6000]
    good = [4950 - 30, 6000]
    unknown = [20 * 60, 0]
    assert line.availability == pytest.approx(sum(running) / (2 * busy - sum(unknown)), rel=1e-12)
    assert line.effectiveness == pytest.approx(IDEAL_CYCLE_SECONDS * sum(produced) / sum(running), rel=1e-12)
    assert line.quality_ratio == pytest.approx(sum(good) / sum(produced), rel=1e-12)
    assert line.failure_events == 2
    assert line.downtime_by_reason == {"jam": timedelta(minutes=15), "fault code 9": timedelta(minutes=20)}
    averaged = sum(part.oee or 0.0 for part in parts) / 2
    assert line.oee is not None
    assert line.oee != pytest.approx(averaged)
    with pytest.raises(ValueError, match="different windows"):
        roll_up("plant", [parts[0], kpis_over(Window("last_hour", NOW - timedelta(hours=1), NOW), second)])


def test_no_production_planned_gives_no_ratios_rather_than_a_division_error() -> None:
    recorder = recorded()
    quiet = compute(recorder.model, recorder.timeline(NOW), [], Window("break", local(11, 2), local(11, 2, 30)))
    assert quiet.planned_downtime == timedelta(minutes=30)
    assert (quiet.availability, quiet.effectiveness, quiet.quality_ratio, quiet.oee) == (None, None, None, None)
    assert (quiet.mtbf, quiet.mttr) == (None, None)


@pytest.mark.parametrize(
    ("change", "place", "reason"),
    [
        ({"calendar": {"timezone": "Mars/Olympus", "shifts": [{"name": "a", "start": "06:00", "end": "14:00"}]}},
         "calendar.timezone", "unknown IANA time zone"),
        ({"calendar": {"shifts": [{"name": "a", "start": "06:00", "end": "14:00",
                                   "breaks": [{"name": "late lunch", "start": "13:30", "end": "14:30"}]}]}},
         "calendar.shifts.0", "does not lie inside the shift"),
        ({"good": {"signal": {"submodel_id": SUBMODEL, "id_short_path": "Good"}}}, "", "good or scrap, not both"),
        ({"speed": None}, "", "speed, line_running or both"),
        ({"calendar": {"shifts": [{"name": "a", "start": "06:00", "end": "14:00"},
                                  {"name": "a", "start": "14:00", "end": "22:00"}]}},
         "calendar.shifts", "two shifts are named 'a'"),
        ({"produced": {"signal": {"submodel_id": SUBMODEL, "id_short_path": "P"}, "modulus": 100,
                       "max_increment": 100}}, "produced", "must be below modulus"),
        ({"ideal_cycle_time": "fast"}, "ideal_cycle_time", "valid number"),
    ],
)  # fmt: skip
def test_bad_state_models_are_refused_with_their_place(change: dict[str, object], place: str, reason: str) -> None:
    document = filler().model_dump(mode="json")
    document.update(change)
    with pytest.raises(ValidationError) as caught:
        MachineStateModel.model_validate(document)
    errors = caught.value.errors()
    assert any(
        ".".join(str(part) for part in error["loc"]).startswith(place) and reason in error["msg"] for error in errors
    ), errors


def test_a_late_sample_is_booked_at_the_latest_time_rather_than_lost() -> None:
    recorder = recorded()
    before = recorder.timeline(NOW)
    # Another device's clock lags: a stop stamped 05:00 arrives after the 05:15 counter sample.
    recorder.add(Sample(SPEED, 0.0, local(11, 5), True))
    assert recorder.late_samples == 1
    after = recorder.timeline(NOW)
    assert after[: len(before) - 1] == before[:-1]  # the past is not rewritten
    assert (after[-2].state, after[-2].end) == (MachineState.RUNNING, local(11, 5, 15))
    assert (after[-1].state, after[-1].start) == (MachineState.IDLE, local(11, 5, 15))


def test_state_precedence_no_data_then_fault_then_running_signals() -> None:
    line = SignalRef(submodel_id=SUBMODEL, id_short_path="LineRunning")
    good = SignalRef(submodel_id=SUBMODEL, id_short_path="GoodCount")
    model = MachineStateModel(
        asset="urn:example:capper",
        calendar=calendar(),
        ideal_cycle_time=1.0,
        speed=SpeedSignal(signal=SPEED, running_above=10.0),
        line_running=line,
        fault=FaultWord(signal=FAULT, reasons={5: "low pressure"}),
        produced=CounterSpec(signal=PRODUCED),
        good=CounterSpec(signal=good),
    )
    recorder = StateRecorder(model, started=local(11, 8))
    recorder.add(Sample(PRODUCED, 100, local(11, 8)))
    recorder.add(Sample(good, 90, local(11, 8)))
    seen = []
    for minute, signal, value, quality in [
        (0, SPEED, 50.0, True),  # the line flag is not known yet: no data
        (1, line, True, True),  # the fault word is not known yet: still no data
        (2, FAULT, 0, True),  # running
        (3, line, False, True),  # the line stopped, the machine still turns: idle
        (4, line, True, True),
        (5, FAULT, 5, True),  # a fault wins over a turning machine
        (6, FAULT, 0, False),  # the fault word is unreadable: no data, not "no fault"
        (7, FAULT, 0, True),
    ]:
        recorder.add(Sample(signal, value, local(11, 8, minute), quality))
        seen.append(recorder.state)
    assert seen == [
        (MachineState.UNKNOWN, "no data"),
        (MachineState.UNKNOWN, "no data"),
        (MachineState.RUNNING, ""),
        (MachineState.IDLE, ""),
        (MachineState.RUNNING, ""),
        (MachineState.DOWN, "low pressure"),
        (MachineState.UNKNOWN, "no data"),
        (MachineState.RUNNING, ""),
    ]
    for minute, produced, good_count in [(8, 160, 145), (10, 200, 180)]:
        recorder.add(Sample(PRODUCED, produced, local(11, 8, minute)))
        recorder.add(Sample(good, good_count, local(11, 8, minute)))
    span = Window("w", local(11, 8), local(11, 8, 10))
    result = compute(model, recorder.timeline(local(11, 8, 10)), recorder.increments, span)
    # Counts at 08:08 (+60 produced, +55 good) and 08:10 (outside the half-open window); a good counter, not scrap.
    assert (result.produced_quantity, result.good_quantity) == (60, 55)
    assert result.actual_production_time == timedelta(minutes=1 + 1 + 3)  # 08:02-03, 08:04-05, 08:07-10
    assert result.downtime_by_reason == {"low pressure": timedelta(minutes=1)}
    assert result.unknown_time == timedelta(minutes=2 + 1)


def test_a_night_shift_across_the_change_to_summer_time_has_seven_hours() -> None:
    recorder = StateRecorder(filler(), started=datetime(2026, 3, 28, 21, tzinfo=BERLIN))
    for signal, value in [(SPEED, 120.0), (FAULT, 0), (PRODUCED, 0), (SCRAP, 0)]:
        recorder.add(Sample(signal, value, datetime(2026, 3, 28, 21, tzinfo=BERLIN)))
    end = datetime(2026, 3, 29, 6, tzinfo=BERLIN)
    recorder.add(Sample(PRODUCED, 7000, datetime(2026, 3, 29, 5, 59, tzinfo=BERLIN)))
    span = Window("night", datetime(2026, 3, 28, 22, tzinfo=BERLIN), end)
    result = compute(recorder.model, recorder.timeline(end), recorder.increments, span)
    # 22:00 to 06:00 on the wall clock is 7 hours when 02:00 becomes 03:00. The 02:00-02:30 break
    # names wall-clock times that do not exist that night: it is read with the offset before the change
    # (as a clock that was not put forward would show it), so it lies at 03:00-03:30 summer time.
    assert result.planned_operation_time == timedelta(hours=7)
    assert result.planned_downtime == timedelta(minutes=30)
    assert result.actual_production_time == timedelta(hours=6, minutes=30)
    stops = [period for period in recorder.model.calendar.periods(span.start, span.end) if period.reason]
    assert [(stop.start, stop.end) for stop in stops] == [
        (datetime(2026, 3, 29, 3, tzinfo=BERLIN), datetime(2026, 3, 29, 3, 30, tzinfo=BERLIN))
    ]
    assert result.effectiveness == pytest.approx(
        IDEAL_CYCLE_SECONDS * 7000 / result.actual_production_time.total_seconds(), rel=1e-12
    )


def test_a_calendar_west_of_greenwich_counts_a_night_shift_in_its_own_zone() -> None:
    new_york = ZoneInfo("America/New_York")
    model = filler().model_copy(
        update={
            "calendar": ShiftCalendar(
                timezone="America/New_York", shifts=(Shift(name="night", start=time(22), end=time(6)),)
            )
        }
    )
    started = datetime(2026, 3, 10, 21, tzinfo=new_york)
    recorder = StateRecorder(model, started=started)
    for signal, value in [(SPEED, 120.0), (FAULT, 0), (PRODUCED, 0), (SCRAP, 0)]:
        recorder.add(Sample(signal, value, started))
    recorder.add(Sample(FAULT, 3, datetime(2026, 3, 11, 1, tzinfo=new_york)))
    recorder.add(Sample(FAULT, 0, datetime(2026, 3, 11, 1, 30, tzinfo=new_york)))
    recorder.add(Sample(PRODUCED, 8000, datetime(2026, 3, 11, 5, tzinfo=new_york)))
    now = datetime(2026, 3, 11, 7, tzinfo=new_york)
    span = window(WindowKind.LAST_24_HOURS, model.calendar, now)
    assert span is not None
    result = compute(model, recorder.timeline(now), recorder.increments, span)
    # 22:00-06:00 New York time, i.e. 03:00-11:00 UTC, of which 30 minutes jammed.
    assert result.planned_operation_time == timedelta(hours=8)
    assert result.actual_downtime == timedelta(minutes=30)
    assert result.unknown_time == timedelta(0)
    assert result.availability == pytest.approx(7.5 / 8, rel=1e-12)
    assert result.produced_quantity == 8000

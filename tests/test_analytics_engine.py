"""The rule evaluation engine: each rule kind at its edges, fed samples and clock ticks with given times."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from basyx.aas.model import datatypes
from hypothesis import given, settings
from hypothesis import strategies as st

from aas_server.analytics.alarms import AlarmTransition, TransitionKind
from aas_server.analytics.engine import MonitoringEngine
from aas_server.analytics.rules import LimitState, parse_rules
from aas_server.model.events import Quality
from aas_server.model.values import coerce

T0 = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
SUBMODEL = "urn:example:submodel:tank-1:operational-data"
LEVEL = "Level"
SETPOINT = "LevelSetpoint"

ACTIVATED = TransitionKind.ACTIVATED
CLEARED = TransitionKind.CLEARED
LIMIT_CHANGED = TransitionKind.LIMIT_CHANGED


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def engine_for(**rule: Any) -> MonitoringEngine:
    data = {
        "rules": [
            {
                "name": "tank-1-level",
                "element": {"submodel": SUBMODEL, "path": LEVEL},
                "severity": 500,
                "message": "level {value}",
                **rule,
            }
        ]
    }
    return MonitoringEngine(parse_rules(data, "test-rules.yaml"))


def summary(transitions: Sequence[AlarmTransition]) -> list[tuple[TransitionKind, datetime]]:
    return [(transition.kind, transition.time) for transition in transitions]


class Feed:
    """Samples of the watched element (and its set-point) with times in seconds after ``T0``."""

    def __init__(self, engine: MonitoringEngine) -> None:
        self.engine = engine

    def __call__(
        self, seconds: float, value: Any, quality: Quality = Quality.GOOD, path: str = LEVEL
    ) -> list[tuple[TransitionKind, datetime]]:
        return summary(self.engine.sample(SUBMODEL, path, value, at(seconds), quality))

    def tick(self, seconds: float) -> list[tuple[TransitionKind, datetime]]:
        return summary(self.engine.tick(at(seconds)))


# -- limits ---------------------------------------------------------------------------------------


def test_limits_enter_each_level_at_its_threshold_exactly() -> None:
    engine = engine_for(kind="limits", hihi=90.0, hi=80.0, lo=20.0, lolo=10.0, message="{level}: {value} vs {limit}")
    feed = Feed(engine)
    assert feed(0, 79.999) == []
    transitions = engine.sample(SUBMODEL, LEVEL, 80.0, at(1))
    assert summary(transitions) == [(ACTIVATED, at(1))]
    assert transitions[0].after.limit_state is LimitState.HIGH
    assert transitions[0].message == "High: 80.0 vs 80.0"
    assert feed(2, 89.999) == []
    assert feed(3, 90) == [(LIMIT_CHANGED, at(3))]
    assert engine.alarm("tank-1-level").limit_state is LimitState.HIGH_HIGH
    assert feed(4, 89.5) == [(LIMIT_CHANGED, at(4))]
    assert engine.alarm("tank-1-level").limit_state is LimitState.HIGH
    assert feed(5, 79.9) == [(CLEARED, at(5))]
    assert engine.alarm("tank-1-level").limit_state is None
    assert not engine.alarm("tank-1-level").active
    assert feed(6, 20.001) == []
    assert feed(7, 20) == [(ACTIVATED, at(7))]
    assert engine.alarm("tank-1-level").limit_state is LimitState.LOW
    assert feed(8, 10) == [(LIMIT_CHANGED, at(8))]
    assert engine.alarm("tank-1-level").limit_state is LimitState.LOW_LOW
    assert feed(9, 50) == [(CLEARED, at(9))]


def test_limits_deadband_holds_the_level_and_re_arms_only_at_the_threshold() -> None:
    feed = Feed(engine_for(kind="limits", hi=80.0, lo=20.0, deadband=5.0))
    assert feed(0, 80) == [(ACTIVATED, at(0))]
    assert feed(1, 75) == []  # exactly hi - deadband: still high
    assert feed(2, 74.99) == [(CLEARED, at(2))]
    assert feed(3, 79.99) == []  # back inside the deadband: not raised again
    assert feed(4, 80) == [(ACTIVATED, at(4))]
    assert feed(5, 60) == [(CLEARED, at(5))]
    assert feed(6, 20) == [(ACTIVATED, at(6))]
    assert feed(7, 25) == []
    assert feed(8, 25.01) == [(CLEARED, at(8))]


def test_limits_escalation_needs_a_new_acknowledgement_but_de_escalation_does_not() -> None:
    engine = engine_for(kind="limits", hi=80.0, hihi=90.0, level_severity={"HighHigh": 900})
    feed = Feed(engine)
    feed(0, 85)
    engine.acknowledge("tank-1-level", "operator", at(1))
    transitions = engine.sample(SUBMODEL, LEVEL, 95, at(2))
    assert transitions[0].after.severity == 900
    assert not transitions[0].after.acknowledged
    engine.acknowledge("tank-1-level", "operator", at(3))
    transitions = engine.sample(SUBMODEL, LEVEL, 85, at(4))
    assert transitions[0].after.severity == 500
    assert transitions[0].after.acknowledged


def test_on_delay_interrupted_raises_nothing_and_a_held_condition_raises_at_its_due_time() -> None:
    feed = Feed(engine_for(kind="limits", hi=80.0, on_delay=10))
    assert feed(0, 85) == []
    assert feed.tick(9.999) == []
    assert feed(5, 70) == []  # interrupted
    assert feed.tick(30) == []
    assert feed(30, 85) == []
    assert feed(35, 86) == []  # still above, the delay is not restarted
    assert feed.tick(39.999) == []
    assert feed.tick(45) == [(ACTIVATED, at(40))]  # the time it fell due, not the tick's


def test_a_sample_after_a_pending_deadline_lets_it_fall_due_first() -> None:
    feed = Feed(engine_for(kind="limits", hi=80.0, on_delay=10, off_delay=5))
    assert feed(0, 85) == []
    assert feed(12, 70) == [(ACTIVATED, at(10))]  # no tick came; the sample brings the due activation
    assert feed(20, 70) == [(CLEARED, at(17))]


def test_off_delay_holds_the_alarm_and_a_return_cancels_it() -> None:
    feed = Feed(engine_for(kind="limits", hi=80.0, off_delay=5))
    assert feed(0, 85) == [(ACTIVATED, at(0))]
    assert feed(1, 70) == []
    assert feed.tick(5.9) == []
    assert feed(3, 85) == []  # back above before the off-delay ran out
    assert feed.tick(20) == []
    assert feed(20, 70) == []
    assert feed.tick(24.999) == []
    assert feed.tick(25) == [(CLEARED, at(25))]


def test_bad_samples_leave_value_rules_alone_and_wrong_types_are_reported_once() -> None:
    engine = engine_for(kind="limits", hi=80.0)
    feed = Feed(engine)
    assert feed(0, 85) == [(ACTIVATED, at(0))]
    assert feed(1, 0.0, Quality.BAD) == []
    assert engine.alarm("tank-1-level").active
    assert feed(2, "overflow") == []
    assert feed(3, None) == []
    problems = engine.take_problems()
    assert len(problems) == 1
    assert problems[0].rule == "tank-1-level"
    assert "'overflow'" in problems[0].reason
    assert engine.take_problems() == []
    assert feed(4, 10) == [(CLEARED, at(4))]


# -- rate of change -------------------------------------------------------------------------------


def test_rate_is_taken_over_the_window() -> None:
    feed = Feed(engine_for(kind="rate", limit=2.0, window=4, message="{rate:.2f}/s"))
    for second in range(5):
        assert feed(second, 0.0) == []
    # oldest sample in the window (t - 4 s, inclusive) is t=1, value 0: rate 8/4 = 2.0, the limit exactly
    assert feed(5, 8.0) == [(ACTIVATED, at(5))]
    assert feed(6, 8.0) == []  # (8 - 0) / 4 still
    assert feed(9, 8.0) == [(CLEARED, at(9))]  # the window now starts at t=5: no change in it


def test_rate_direction_and_deadband() -> None:
    feed = Feed(engine_for(kind="rate", limit=2.0, window=1, direction="falling", deadband=0.5))
    assert feed(0, 10.0) == []
    assert feed(1, 13.0) == []  # rising 3/s: not watched
    assert feed(2, 11.0) == [(ACTIVATED, at(2))]
    assert feed(3, 9.4) == []  # -1.6/s: inside the deadband
    assert feed(4, 8.0) == [(CLEARED, at(4))]  # -1.4/s
    assert feed(3.5, 0.0) == []  # out of order: skipped


# -- stuck ------------------------------------------------------------------------------------------


def test_stuck_for_exactly_the_duration_within_the_tolerance() -> None:
    feed = Feed(engine_for(kind="stuck", duration=10, tolerance=0.1))
    assert feed(0, 5.0) == []
    assert feed(3, 5.05) == []
    assert feed(6, 4.95) == []
    assert feed.tick(9.999) == []
    assert feed.tick(10) == [(ACTIVATED, at(10))]
    assert feed(11, 5.0) == []
    assert feed(12, 5.2) == [(CLEARED, at(12))]
    assert feed(20, 5.2) == []
    assert feed.tick(100) == [(ACTIVATED, at(22))]  # one late tick still gives the exact time


def test_stuck_restarts_after_a_sample_that_is_not_good() -> None:
    feed = Feed(engine_for(kind="stuck", duration=10))
    assert feed(0, 7) == []
    assert feed(5, 7, Quality.BAD) == []
    assert feed(6, 7) == []
    assert feed.tick(15.9) == []
    assert feed.tick(16) == [(ACTIVATED, at(16))]
    assert feed(17, 7, Quality.UNCERTAIN) == [(CLEARED, at(17))]


def test_a_changing_value_is_never_stuck_and_keeps_few_timers() -> None:
    engine = engine_for(kind="stuck", duration=10)
    feed = Feed(engine)
    for second in range(1000):
        assert feed(second, float(second)) == []
        if second % 7 == 0:
            assert feed.tick(second) == []
    assert len(engine._timers.heap) <= 2


# -- bad quality ------------------------------------------------------------------------------------


def test_bad_quality_for_the_duration_then_recovery() -> None:
    feed = Feed(engine_for(kind="bad_quality", duration=30, message="{quality} for {duration} s"))
    assert feed(0, 1.0, Quality.BAD) == []
    assert feed(10, 1.0, Quality.BAD) == []
    assert feed.tick(29.9) == []
    transitions = feed.engine.tick(at(30))
    assert summary(transitions) == [(ACTIVATED, at(30))]
    assert transitions[0].message == "bad for 30.0 s"
    assert feed(40, 2.0, Quality.UNCERTAIN) == [(CLEARED, at(40))]  # uncertain is not bad here
    assert feed(50, 2.0, Quality.BAD) == []
    assert feed(60, 2.0) == []  # recovered before the duration
    assert feed.tick(200) == []


def test_bad_quality_may_count_uncertain() -> None:
    feed = Feed(engine_for(kind="bad_quality", duration=5, include_uncertain=True))
    assert feed(0, 1.0, Quality.UNCERTAIN) == []
    assert feed(6, 1.0, Quality.BAD) == [(ACTIVATED, at(5))]
    assert feed(7, 1.0) == [(CLEARED, at(7))]


# -- boolean state ----------------------------------------------------------------------------------


def test_state_rule_follows_the_boolean() -> None:
    engine = engine_for(kind="state")
    feed = Feed(engine)
    assert feed(0, False) == []
    assert feed(1, True) == [(ACTIVATED, at(1))]
    assert feed(2, True) == []
    assert feed(3, False) == [(CLEARED, at(3))]
    assert feed(4, 1) == [(ACTIVATED, at(4))]  # numbers: non-zero is true
    assert feed(5, 0) == [(CLEARED, at(5))]
    assert feed(6, "yes") == []
    assert len(engine.take_problems()) == 1


def test_state_rule_active_when_false() -> None:
    feed = Feed(engine_for(kind="state", active_when=False, on_delay=2))
    assert feed(0, True) == []
    assert feed(1, False) == []
    assert feed.tick(3) == [(ACTIVATED, at(3))]


# -- deviation from the set-point -------------------------------------------------------------------


def test_deviation_from_the_set_point_with_deadband() -> None:
    engine = engine_for(
        kind="deviation",
        setpoint={"submodel": SUBMODEL, "path": SETPOINT},
        limit=5.0,
        deadband=1.0,
        message="{value} is {deviation:+.1f} from {setpoint}",
    )
    feed = Feed(engine)
    assert feed(0, 58.0) == []  # no set-point yet
    assert feed(1, 50.0, path=SETPOINT) == [(ACTIVATED, at(1))]
    assert feed(2, 54.0) == []  # 4.0: held by the deadband
    assert feed(3, 53.9) == [(CLEARED, at(3))]
    transitions = engine.sample(SUBMODEL, LEVEL, 45.0, at(4))  # exactly the limit below
    assert summary(transitions) == [(ACTIVATED, at(4))]
    assert transitions[0].message == "45.0 is -5.0 from 50.0"
    assert feed(5, 46.0, path=SETPOINT) == [(CLEARED, at(5))]  # the set-point moved to the value


def test_deviation_in_one_direction_only() -> None:
    feed = Feed(
        engine_for(kind="deviation", setpoint={"submodel": SUBMODEL, "path": SETPOINT}, limit=5.0, direction="rising")
    )
    feed(0, 50.0, path=SETPOINT)
    assert feed(1, 40.0) == []
    assert feed(2, 55.0) == [(ACTIVATED, at(2))]


# -- restart ----------------------------------------------------------------------------------------


def test_alarm_state_survives_a_restart_through_plain_json() -> None:
    engine = engine_for(kind="limits", hi=80.0, confirm=True)
    Feed(engine)(0, 85)
    engine.add_comment("tank-1-level", "operator", at(1), "valve checked")
    kept = json.loads(json.dumps(engine.to_dict()))

    restarted = engine_for(kind="limits", hi=80.0, confirm=True)
    assert restarted.restore(kept) == []
    alarm = restarted.alarm("tank-1-level")
    assert alarm.active
    assert not alarm.acknowledged
    assert not alarm.confirmed
    assert alarm.limit_state is LimitState.HIGH
    assert alarm.comment == "valve checked"
    feed = Feed(restarted)
    assert feed(10, 86) == []  # still high: no second activation
    restarted.acknowledge("tank-1-level", "operator", at(11))
    assert feed(12, 50) == [(CLEARED, at(12))]
    assert alarm.retain  # acknowledged, not yet confirmed


def test_naive_times_are_refused() -> None:
    engine = engine_for(kind="limits", hi=80.0)
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.sample(SUBMODEL, LEVEL, 85.0, datetime(2026, 12, 6, 8, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.tick(datetime(2026, 12, 6, 8, 0))


def test_samples_of_unwatched_elements_cost_nothing() -> None:
    engine = engine_for(kind="limits", hi=80.0)
    assert engine.sample(SUBMODEL, "Temperature", 1000.0, at(0)) == ()
    assert engine.watched_elements == frozenset({(SUBMODEL, LEVEL)})


def test_a_bound_input_gives_the_same_transitions_as_sample() -> None:
    by_sample = engine_for(kind="limits", hi=80.0, lo=20.0, deadband=2.0, on_delay=1)
    by_input = engine_for(kind="limits", hi=80.0, lo=20.0, deadband=2.0, on_delay=1)
    element_input = by_input.bind(SUBMODEL, LEVEL)
    assert element_input is not None
    assert by_input.bind(SUBMODEL, "Temperature") is None
    values = [50.0, 81.0, 79.0, 85.0, 85.0, 77.9, 19.0, 19.5, 50.0, 50.0]
    for second, value in enumerate(values):
        expected = summary(by_sample.sample(SUBMODEL, LEVEL, value, at(second)))
        assert summary(element_input(value, at(second))) == expected
    assert by_sample.to_dict() == by_input.to_dict()
    assert by_sample.alarm("tank-1-level").last_change == at(8)


def test_deadlines_due_in_one_tick_fall_due_in_their_order() -> None:
    feed = Feed(engine_for(kind="bad_quality", duration=30, off_delay=10))
    assert feed(0, 1.0, Quality.BAD) == []
    assert feed.tick(30) == [(ACTIVATED, at(30))]
    assert feed(40, 1.0) == []  # good again: cleared after the off-delay, at 50
    assert feed(45, 1.0, Quality.BAD) == []  # bad again: active again after 30 s, at 75
    assert feed.tick(100) == [(CLEARED, at(50)), (ACTIVATED, at(75))]


def test_stuck_counts_from_the_last_change_whether_ticks_or_samples_come_first() -> None:
    feed = Feed(engine_for(kind="stuck", duration=10))
    assert feed(0, 1) == []
    assert feed(5, 2) == []
    assert feed.tick(10) == []  # the first deadline moved on with the change at 5
    assert feed.tick(14.999) == []
    assert feed.tick(15) == [(ACTIVATED, at(15))]
    assert feed(16, 3) == [(CLEARED, at(16))]
    assert feed(20, 4) == []
    assert feed(29.5, 4) == []
    assert feed(31, 4) == [(ACTIVATED, at(30))]  # no tick came: the sample brings the due activation


LIMITS = {"hihi": 90.0, "hi": 80.0, "lo": 20.0, "lolo": 10.0}


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=60),
    deadband=st.sampled_from([0.0, 0.5, 3.0]),
)
def test_limit_states_keep_their_definition_for_any_sequence(values: list[float], deadband: float) -> None:
    engine = engine_for(kind="limits", deadband=deadband, **LIMITS)
    hihi, hi, lo, lolo = LIMITS["hihi"], LIMITS["hi"], LIMITS["lo"], LIMITS["lolo"]
    for second, value in enumerate(values):
        engine.sample(SUBMODEL, LEVEL, value, at(second))
        state = engine.alarm("tank-1-level").limit_state
        assert engine.alarm("tank-1-level").active is (state is not None)
        if value >= hihi or value <= lolo:
            assert state is (LimitState.HIGH_HIGH if value >= hihi else LimitState.LOW_LOW)
        elif value >= hi:
            assert state in (LimitState.HIGH, LimitState.HIGH_HIGH)
        elif value <= lo:
            assert state in (LimitState.LOW, LimitState.LOW_LOW)
        elif lo + deadband < value < hi - deadband:
            assert state is None
        bound = {
            LimitState.HIGH_HIGH: value >= hihi - deadband,
            LimitState.HIGH: value >= hi - deadband,
            LimitState.LOW: value <= lo + deadband,
            LimitState.LOW_LOW: value <= lolo + deadband,
        }
        assert state is None or bound[state], (value, state)


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=1, max_value=40), st.floats(min_value=0, max_value=100, allow_nan=False)),
        min_size=1,
        max_size=40,
    ),
    tick_period=st.sampled_from([0.5, 3.0, 17.0]),
)
def test_transition_times_do_not_depend_on_the_tick_rate(steps: list[tuple[int, float]], tick_period: float) -> None:
    rule: dict[str, Any] = {"kind": "limits", "hi": 50.0, "deadband": 2.0, "on_delay": 5, "off_delay": 3}
    every_tenth = engine_for(**rule)
    sparse = engine_for(**rule)
    seen: dict[str, list[tuple[TransitionKind, datetime]]] = {"dense": [], "sparse": []}
    dense_clock = 0.0
    sparse_clock = 0.0
    time = 0.0
    for gap, value in steps:
        time += gap
        while dense_clock + 0.1 < time:
            dense_clock += 0.1
            seen["dense"] += summary(every_tenth.tick(at(dense_clock)))
        while sparse_clock + tick_period < time:
            sparse_clock += tick_period
            seen["sparse"] += summary(sparse.tick(at(sparse_clock)))
        seen["dense"] += summary(every_tenth.sample(SUBMODEL, LEVEL, value, at(time)))
        seen["sparse"] += summary(sparse.sample(SUBMODEL, LEVEL, value, at(time)))
    seen["dense"] += summary(every_tenth.tick(at(time + 100)))
    seen["sparse"] += summary(sparse.tick(at(time + 100)))
    assert seen["dense"] == seen["sparse"]


def test_values_as_the_store_holds_them_are_numbers() -> None:
    """The store keeps xs:int as ``datatypes.Int``, xs:float as ``datatypes.Float``, xs:decimal as ``Decimal``."""
    limits = Feed(engine_for(kind="limits", hi=80.0))
    assert limits(0, coerce(datatypes.Int, 85)) == [(ACTIVATED, at(0))]
    assert limits(1, Decimal("79.5")) == [(CLEARED, at(1))]
    assert limits(2, datatypes.Float(80.0)) == [(ACTIVATED, at(2))]
    assert limits(3, coerce(datatypes.UnsignedShort, 12)) == [(CLEARED, at(3))]
    assert limits(4, Decimal("NaN")) == []
    assert limits(5, True) == []
    assert len(limits.engine.take_problems()) == 1

    deviation = Feed(engine_for(kind="deviation", setpoint={"submodel": SUBMODEL, "path": SETPOINT}, limit=5.0))
    assert deviation(0, Decimal("50.5"), path=SETPOINT) == []
    assert deviation(1, coerce(datatypes.Short, 56)) == [(ACTIVATED, at(1))]

    rate = Feed(engine_for(kind="rate", limit=1.0, window=10))
    assert rate(0, coerce(datatypes.Long, 0)) == []
    assert rate(2, Decimal("2.5")) == [(ACTIVATED, at(2))]

    stuck = Feed(engine_for(kind="stuck", duration=10, tolerance=0.5))
    assert stuck(0, coerce(datatypes.Int, 7)) == []
    assert stuck(5, 7.4) == []
    assert stuck.tick(10) == [(ACTIVATED, at(10))]

    state = Feed(engine_for(kind="state"))
    assert state(0, coerce(datatypes.Byte, 1)) == [(ACTIVATED, at(0))]
    for feed in (deviation, rate, stuck, state):
        assert feed.engine.take_problems() == []


def test_a_limit_message_formats_the_limit_it_left_when_it_clears() -> None:
    engine = engine_for(kind="limits", hi=80.0, message="{level} at {value:.1f} (limit {limit:.0f})")
    assert engine.sample(SUBMODEL, LEVEL, 85.0, at(0))[0].message == "High at 85.0 (limit 80)"
    assert engine.sample(SUBMODEL, LEVEL, 70.0, at(1))[0].message == "High at 70.0 (limit 80)"
    assert engine.take_problems() == []


def test_a_stuck_alarm_restored_active_stays_active_until_the_value_moves() -> None:
    engine = engine_for(kind="stuck", duration=10)
    Feed(engine)(0, 3.0)
    assert summary(engine.tick(at(10))) == [(ACTIVATED, at(10))]
    restarted = engine_for(kind="stuck", duration=10)
    restarted.restore(json.loads(json.dumps(engine.to_dict())))
    feed = Feed(restarted)
    assert feed(20, 3.0) == []
    assert feed.tick(40) == []
    assert restarted.alarm("tank-1-level").active
    assert feed(41, 3.5) == [(CLEARED, at(41))]
    assert feed.tick(51) == [(ACTIVATED, at(51))]

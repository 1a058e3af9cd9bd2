"""The alarm lifecycle (OPC UA Part 9 / ISA-18.2): legal transitions, refused ones, shelving, comments, restart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aas_server.analytics.alarms import (
    SYSTEM,
    Alarm,
    AlarmStateError,
    AlarmStateReason,
    Shelving,
    TransitionKind,
)
from aas_server.analytics.engine import MonitoringEngine
from aas_server.analytics.rules import LimitState, parse_rules
from aas_server.errors import ConflictError, NotFoundError

T0 = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
SUBMODEL = "urn:example:submodel:filler:operational-data"
NAME = "filler-pressure"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def engine_for(**rule: Any) -> MonitoringEngine:
    data = {
        "rules": [
            {
                "name": NAME,
                "kind": "limits",
                "element": {"submodel": SUBMODEL, "path": "Pressure"},
                "severity": 700,
                "message": "pressure {value} bar",
                "hi": 6.0,
                **rule,
            }
        ]
    }
    return MonitoringEngine(parse_rules(data, "test-rules.yaml"))


def raise_alarm(engine: MonitoringEngine, seconds: float = 0) -> None:
    assert engine.sample(SUBMODEL, "Pressure", 7.0, at(seconds))


def clear_alarm(engine: MonitoringEngine, seconds: float) -> None:
    assert engine.sample(SUBMODEL, "Pressure", 1.0, at(seconds))


def test_activation_acknowledgement_and_return_to_normal_with_audit_records() -> None:
    engine = engine_for()
    alarm = engine.alarm(NAME)
    assert not alarm.retain
    activated = engine.sample(SUBMODEL, "Pressure", 7.0, at(0))[0]
    assert activated.kind is TransitionKind.ACTIVATED
    assert activated.user == SYSTEM
    assert activated.before.active is False
    assert activated.after.active is True
    assert activated.after.retain
    assert not activated.after.acknowledged
    assert activated.message == "pressure 7.0 bar"
    assert activated.value == 7.0

    acknowledged = engine.acknowledge(NAME, "alice", at(5), "seen, reducing feed")
    assert acknowledged.kind is TransitionKind.ACKNOWLEDGED
    assert (acknowledged.user, acknowledged.time, acknowledged.comment) == ("alice", at(5), "seen, reducing feed")
    assert acknowledged.after.acknowledged
    assert acknowledged.after.retain
    assert alarm.comment == "seen, reducing feed"
    assert alarm.comment_user == "alice"

    cleared = engine.sample(SUBMODEL, "Pressure", 1.0, at(9))[0]
    assert cleared.kind is TransitionKind.CLEARED
    assert not cleared.after.retain  # inactive and acknowledged: of no more interest

    record = json.loads(json.dumps(acknowledged.as_dict()))
    assert record["transition"] == "acknowledged"
    assert record["user"] == "alice"
    assert record["from"]["acknowledged"] is False
    assert record["to"]["acknowledged"] is True
    assert record["time"] == at(5).isoformat()


def test_return_to_normal_unacknowledged_is_retained_until_acknowledged() -> None:
    engine = engine_for()
    raise_alarm(engine)
    clear_alarm(engine, 2)
    alarm = engine.alarm(NAME)
    assert not alarm.active
    assert not alarm.acknowledged
    assert alarm.retain
    engine.acknowledge(NAME, "bob", at(3))
    assert not alarm.retain


def test_acknowledging_twice_is_refused_and_changes_nothing() -> None:
    engine = engine_for()
    raise_alarm(engine)
    engine.acknowledge(NAME, "alice", at(1))
    before = engine.alarm(NAME).to_dict()
    with pytest.raises(AlarmStateError, match="acknowledged already") as refused:
        engine.acknowledge(NAME, "bob", at(2), "me too")
    assert refused.value.reason is AlarmStateReason.ALREADY_ACKNOWLEDGED
    assert isinstance(refused.value, ConflictError)  # HTTP 409 on REST
    assert NAME in str(refused.value)
    assert engine.alarm(NAME).to_dict() == before


def test_acknowledging_an_alarm_that_never_was_active_is_refused() -> None:
    engine = engine_for()
    with pytest.raises(AlarmStateError) as refused:
        engine.acknowledge(NAME, "alice", at(1))
    assert refused.value.reason is AlarmStateReason.ALREADY_ACKNOWLEDGED


def test_confirmation_comes_after_acknowledgement_and_only_once() -> None:
    engine = engine_for(confirm=True)
    raise_alarm(engine)
    alarm = engine.alarm(NAME)
    assert not alarm.confirmed
    with pytest.raises(AlarmStateError, match="acknowledged before it is confirmed") as refused:
        engine.confirm(NAME, "alice", at(1))
    assert refused.value.reason is AlarmStateReason.NOT_ACKNOWLEDGED
    engine.acknowledge(NAME, "alice", at(2))
    clear_alarm(engine, 3)
    assert alarm.retain  # inactive, acknowledged, unconfirmed
    confirmed = engine.confirm(NAME, "carol", at(4), "repaired the regulator")
    assert confirmed.kind is TransitionKind.CONFIRMED
    assert confirmed.after.confirmed
    assert not engine.alarm(NAME).retain
    with pytest.raises(AlarmStateError) as refused:
        engine.confirm(NAME, "carol", at(5))
    assert refused.value.reason is AlarmStateReason.ALREADY_CONFIRMED


def test_confirm_on_an_alarm_without_confirmation_is_refused() -> None:
    engine = engine_for()
    raise_alarm(engine)
    engine.acknowledge(NAME, "alice", at(1))
    with pytest.raises(AlarmStateError, match="does not use confirmation") as refused:
        engine.confirm(NAME, "alice", at(2))
    assert refused.value.reason is AlarmStateReason.NO_CONFIRMATION


def test_comments_are_recorded_with_who_and_when() -> None:
    engine = engine_for()
    raise_alarm(engine)
    transition = engine.add_comment(NAME, "dave", at(3), "maintenance called")
    assert transition.kind is TransitionKind.COMMENTED
    assert transition.before.active
    assert transition.after.active
    alarm = engine.alarm(NAME)
    assert (alarm.comment, alarm.comment_user, alarm.comment_time) == ("maintenance called", "dave", at(3))


def test_one_shot_shelving_ends_when_the_alarm_clears() -> None:
    engine = engine_for()
    raise_alarm(engine)
    shelved = engine.shelve(NAME, "alice", at(1), comment="known leak")
    assert shelved.after.shelving is Shelving.ONE_SHOT
    assert shelved.after.active
    with pytest.raises(AlarmStateError) as refused:
        engine.shelve(NAME, "alice", at(2))
    assert refused.value.reason is AlarmStateReason.ALREADY_SHELVED
    cleared = engine.sample(SUBMODEL, "Pressure", 1.0, at(3))[0]
    assert cleared.before.shelving is Shelving.ONE_SHOT
    assert cleared.after.shelving is Shelving.UNSHELVED
    raised_again = engine.sample(SUBMODEL, "Pressure", 7.0, at(4))[0]
    assert raised_again.after.shelving is Shelving.UNSHELVED


def test_timed_shelving_expires_at_its_time() -> None:
    engine = engine_for(max_shelve_time=3600)
    raise_alarm(engine)
    shelved = engine.shelve(NAME, "alice", at(10), duration=timedelta(minutes=1))
    assert shelved.after.shelving is Shelving.TIMED
    assert shelved.after.shelving_expires == at(70)
    with pytest.raises(AlarmStateError) as refused:
        engine.shelve(NAME, "alice", at(11), duration=timedelta(minutes=5))
    assert refused.value.reason is AlarmStateReason.ALREADY_SHELVED
    assert engine.tick(at(69.999)) == ()
    expired = engine.tick(at(95))
    assert [(transition.kind, transition.time, transition.user) for transition in expired] == [
        (TransitionKind.UNSHELVED, at(70), SYSTEM)
    ]
    assert engine.alarm(NAME).shelving is Shelving.UNSHELVED
    assert engine.tick(at(200)) == ()


def test_shelving_time_out_of_range_and_unshelve_of_an_unshelved_alarm_are_refused() -> None:
    engine = engine_for(max_shelve_time=600)
    raise_alarm(engine)
    for duration in (timedelta(0), timedelta(seconds=601)):
        with pytest.raises(AlarmStateError) as refused:
            engine.shelve(NAME, "alice", at(1), duration=duration)
        assert refused.value.reason is AlarmStateReason.SHELVING_TIME
    with pytest.raises(AlarmStateError) as refused:
        engine.unshelve(NAME, "alice", at(2))
    assert refused.value.reason is AlarmStateReason.NOT_SHELVED


def test_timed_shelving_may_become_one_shot_and_be_unshelved_by_hand() -> None:
    engine = engine_for()
    raise_alarm(engine)
    engine.shelve(NAME, "alice", at(1), duration=timedelta(minutes=10))
    one_shot = engine.shelve(NAME, "alice", at(2))
    assert one_shot.before.shelving is Shelving.TIMED
    assert one_shot.after.shelving is Shelving.ONE_SHOT
    assert one_shot.after.shelving_expires is None
    assert engine.tick(at(3600)) == ()
    unshelved = engine.unshelve(NAME, "bob", at(3601), "back to normal watch")
    assert unshelved.after.shelving is Shelving.UNSHELVED
    assert unshelved.user == "bob"


def test_disabled_alarm_ignores_its_condition_and_enable_picks_it_up() -> None:
    engine = engine_for()
    raise_alarm(engine)
    disabled = engine.disable(NAME, "admin", at(1), "sensor replaced")
    assert not disabled.after.active
    assert not disabled.after.retain
    assert engine.sample(SUBMODEL, "Pressure", 8.0, at(2)) == ()
    with pytest.raises(AlarmStateError) as refused:
        engine.acknowledge(NAME, "alice", at(3))
    assert refused.value.reason is AlarmStateReason.DISABLED
    with pytest.raises(AlarmStateError) as refused:
        engine.disable(NAME, "admin", at(3))
    assert refused.value.reason is AlarmStateReason.ALREADY_DISABLED
    enabled = engine.enable(NAME, "admin", at(4))
    assert [transition.kind for transition in enabled] == [TransitionKind.ENABLED, TransitionKind.ACTIVATED]
    assert engine.alarm(NAME).active
    assert engine.alarm(NAME).limit_state is LimitState.HIGH
    with pytest.raises(AlarmStateError) as refused:
        engine.enable(NAME, "admin", at(5))
    assert refused.value.reason is AlarmStateReason.ALREADY_ENABLED


def test_unknown_alarm_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="no-such-alarm"):
        engine_for().acknowledge("no-such-alarm", "alice", at(0))


def test_operator_times_must_be_timezone_aware() -> None:
    engine = engine_for()
    raise_alarm(engine)
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.acknowledge(NAME, "alice", datetime(2026, 12, 6, 22, 0))
    assert not engine.alarm(NAME).acknowledged


def test_shelving_and_comments_survive_a_restart_and_a_timed_shelving_still_expires() -> None:
    engine = engine_for(confirm=True)
    raise_alarm(engine)
    engine.acknowledge(NAME, "alice", at(1), "on it")
    engine.shelve(NAME, "alice", at(2), duration=timedelta(minutes=30))
    kept = json.loads(json.dumps(engine.to_dict()))

    restarted = engine_for(confirm=True)
    assert restarted.restore(kept) == []
    alarm = restarted.alarm(NAME)
    assert alarm.to_dict() == engine.alarm(NAME).to_dict()
    assert alarm.shelving is Shelving.TIMED
    assert alarm.shelving_expires == at(1802)
    expired = restarted.tick(at(1900))
    assert [(transition.kind, transition.time) for transition in expired] == [(TransitionKind.UNSHELVED, at(1802))]
    clear_alarm(restarted, 1901)
    restarted.confirm(NAME, "alice", at(1902))
    assert not alarm.retain


def test_kept_state_of_a_removed_rule_is_reported_and_a_foreign_version_refused() -> None:
    engine = engine_for()
    kept = engine.to_dict()
    kept["alarms"].append(Alarm("old-rule", 10).to_dict())
    assert engine_for().restore(kept) == ["old-rule"]
    with pytest.raises(ValueError, match="version"):
        engine_for().restore({"version": 99, "alarms": []})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("active", "yes"),
        ("severity", 0),
        ("shelving", "Sleeping"),
        ("shelvingExpires", "2026-12-06T22:00:00"),
        ("limitState", "Hot"),
    ],
)
def test_kept_state_that_does_not_fit_is_refused_naming_the_alarm_and_changes_nothing(
    field: str, value: object
) -> None:
    engine = engine_for()
    raise_alarm(engine)
    kept = engine.to_dict()
    kept["alarms"][0][field] = value
    restarted = engine_for()
    before = restarted.alarm(NAME).to_dict()
    with pytest.raises(ValueError, match=f"alarm '{NAME}'"):
        restarted.restore(kept)
    assert restarted.alarm(NAME).to_dict() == before


def test_a_restore_is_all_or_nothing() -> None:
    def two_rules() -> MonitoringEngine:
        rule = {"kind": "state", "severity": 100, "message": "m"}
        data = {
            "rules": [
                {**rule, "name": "first", "element": {"submodel": SUBMODEL, "path": "A"}},
                {**rule, "name": "second", "element": {"submodel": SUBMODEL, "path": "B"}},
            ]
        }
        return MonitoringEngine(parse_rules(data, "test-rules.yaml"))

    engine = two_rules()
    engine.sample(SUBMODEL, "A", True, at(0))
    engine.sample(SUBMODEL, "B", True, at(0))
    kept = engine.to_dict()
    kept["alarms"][1]["acknowledged"] = None
    restarted = two_rules()
    with pytest.raises(ValueError, match="alarm 'second'"):
        restarted.restore(kept)
    assert not restarted.alarm("first").active
    with pytest.raises(ValueError, match="no list of alarms"):
        restarted.restore({"version": 1, "alarms": {"first": {}}})

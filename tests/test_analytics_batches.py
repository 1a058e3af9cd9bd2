"""The fast paths of the analytics core give the same answers as the plain ones: a batch of change-bus
events through ``MonitoringEngine.changes`` against one ``sample`` call per change, and an anomaly
detector's kept standard-score reference against river's own ``score_one``."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from basyx.aas.model import datatypes
from river import anomaly

from aas_server.analytics.alarms import AlarmTransition
from aas_server.analytics.engine import MonitoringEngine
from aas_server.analytics.predictive import AnomalyDetector, DetectorConfig, detector_from_bytes, to_bytes
from aas_server.analytics.rules import parse_rules
from aas_server.analytics.states import SignalRef
from aas_server.model.events import Quality, ValueChanged
from aas_server.model.values import coerce
from aas_server.store.twin_store import ModelChanged, ModelChangeKind

T0 = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
SUBMODEL = "urn:example:submodel:tank-1:operational-data"


def rules() -> MonitoringEngine:
    def rule(name: str, path: str, **fields: Any) -> dict[str, Any]:
        element = {"submodel": SUBMODEL, "path": path}
        return {"name": name, "element": element, "severity": 500, "message": "{name}: {value}", **fields}

    data = {
        "rules": [
            rule("level-limits", "Level", kind="limits", hi=80.0, lo=20.0, deadband=2.0, on_delay=2),
            rule("level-rate", "Level", kind="rate", limit=10.0, window=3),
            rule("level-stuck", "Level", kind="stuck", duration=4, tolerance=0.01),
            rule("level-bad", "Level", kind="bad_quality", duration=2),
            rule("count-limits", "Count", kind="limits", hihi=100, hi=50),
            rule("pump-state", "PumpFault", kind="state"),
            rule(
                "flow-deviation",
                "Flow",
                kind="deviation",
                setpoint={"submodel": SUBMODEL, "path": "FlowSetpoint"},
                limit=5.0,
                deadband=1.0,
            ),
        ]
    }
    return MonitoringEngine(parse_rules(data, "test-rules.yaml"))


def scripted_changes() -> list[object]:
    """A minute of changes of every watched element (and some others), with values as the store holds them."""
    rng = random.Random(5)
    changes: list[object] = []
    level = 50.0
    for second in range(60):
        time = T0 + timedelta(seconds=second)
        level = level if 44 <= second < 51 else level + rng.uniform(-15, 15)
        quality = Quality.BAD if 30 <= second < 34 else Quality.UNCERTAIN if second == 40 else Quality.GOOD
        changes.append(ValueChanged(SUBMODEL, "Level", level, time, quality))
        changes.append(ValueChanged(SUBMODEL, "Count", coerce(datatypes.Int, second * 3), time))
        changes.append(ValueChanged(SUBMODEL, "PumpFault", second % 17 < 4, time))
        changes.append(ValueChanged(SUBMODEL, "Flow", Decimal(str(round(rng.uniform(0, 20), 2))), time))
        changes.append(ValueChanged(SUBMODEL, "FlowSetpoint", 10.0 if second < 30 else 14.0, time))
        changes.append(ValueChanged(SUBMODEL, "Unwatched", 1.0, time))
        if second == 20:
            changes.append(ModelChanged(ModelChangeKind.UPDATED, SUBMODEL))
    return changes


def as_records(transitions: list[AlarmTransition]) -> list[dict[str, Any]]:
    return [transition.as_dict() for transition in transitions]


def test_a_batch_gives_the_transitions_of_one_sample_call_per_change_in_the_same_order() -> None:
    by_sample, by_batch = rules(), rules()
    changes = scripted_changes()
    expected: list[AlarmTransition] = []
    for change in changes:
        if isinstance(change, ValueChanged):
            expected.extend(
                by_sample.sample(
                    change.submodel_id, change.id_short_path, change.value, change.source_time, change.quality
                )
            )
    batched: list[AlarmTransition] = []
    for offset in range(0, len(changes), 37):  # batches cut anywhere, as the bus hands them out
        batched.extend(by_batch.changes(changes[offset : offset + 37]))
    assert len(expected) > 10  # every kind had something to say
    assert {transition.alarm for transition in expected} == set(by_sample.alarms)
    assert as_records(batched) == as_records(expected)
    assert by_batch.to_dict() == by_sample.to_dict()


def test_a_change_whose_rules_fail_is_reported_and_the_batch_goes_on() -> None:
    engine = rules()
    naive = datetime(2026, 12, 6, 8, 0)
    failed: list[tuple[str, str]] = []
    transitions = engine.changes(
        [
            ValueChanged(SUBMODEL, "Level", 95.0, naive),
            ValueChanged(SUBMODEL, "PumpFault", True, T0),
        ],
        lambda change, error: failed.append((change.id_short_path, type(error).__name__)),
    )
    assert failed == [("Level", "ValueError")]
    assert [transition.alarm for transition in transitions] == ["pump-state"]


def test_the_kept_standard_score_reference_scores_exactly_as_river() -> None:
    signal = SignalRef(submodel_id=SUBMODEL, id_short_path="Vibration")
    config = DetectorConfig(name="vibration", signals=(signal,), warm_up=50)
    detector = AnomalyDetector(config)
    river_model: Any = anomaly.StandardAbsoluteDeviation()
    rng = random.Random(11)
    for second in range(400):
        value = rng.gauss(2.0, 0.15) if second < 300 else 2.0 + (second - 300) * 0.05
        result = detector.update(signal, value, T0 + timedelta(seconds=second))
        if second < 50:
            river_model.learn_one(None, value)
            assert result is None
            continue
        assert result is not None
        assert result.score == river_model.score_one(None, value)
    assert result is not None
    assert result.anomalous  # the drift at the end is found
    assert result.persistent

    # kept and restored, it goes on scoring the same (the reference is rebuilt from the river model)
    restored = detector_from_bytes(to_bytes(detector), config)
    later = T0 + timedelta(seconds=500)
    assert restored.update(signal, 2.3, later) == detector.update(signal, 2.3, later)


def test_with_adapt_the_reference_follows_what_the_model_learns() -> None:
    signal = SignalRef(submodel_id=SUBMODEL, id_short_path="Vibration")
    detector = AnomalyDetector(DetectorConfig(name="vibration", signals=(signal,), warm_up=10, adapt=True))
    river_model: Any = anomaly.StandardAbsoluteDeviation()
    rng = random.Random(3)
    for second in range(200):
        value = rng.gauss(5.0, 1.0)
        result = detector.update(signal, value, T0 + timedelta(seconds=second))
        if result is not None:
            assert result.score == river_model.score_one(None, value)
            if result.anomalous:
                continue
        river_model.learn_one(None, value)

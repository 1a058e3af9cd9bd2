"""Predictive maintenance core: river anomaly detectors (warm-up, persistence, refusal of foreign pickles)
and remaining-useful-life estimates against trends whose crossing time is known by construction."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from aas_server.analytics.predictive import (
    AnomalyDetector,
    AnomalyResult,
    DetectorConfig,
    RulConfig,
    RulEstimator,
    detector_from_bytes,
    naive_rul,
    to_bytes,
)
from aas_server.analytics.states import SignalRef

SUBMODEL = "urn:example:filler:condition"
VIBRATION = SignalRef(submodel_id=SUBMODEL, id_short_path="Vibration")
TEMPERATURE = SignalRef(submodel_id=SUBMODEL, id_short_path="BearingTemperature")
WEAR = SignalRef(submodel_id=SUBMODEL, id_short_path="PadThickness")
START = datetime(2026, 3, 10, tzinfo=UTC)


def at(second: float) -> datetime:
    return START + timedelta(seconds=second)


def healthy(detector: AnomalyDetector, count: int, seed: int = 7) -> list[AnomalyResult | None]:
    rng = random.Random(seed)
    results = []
    for index in range(count):
        detector.update(TEMPERATURE, 45.0 + rng.gauss(0, 0.5), at(index))
        results.append(detector.update(VIBRATION, 2.0 + rng.gauss(0, 0.1), at(index)))
    return results


def test_standard_score_warms_up_then_flags_a_persisting_rise() -> None:
    detector = AnomalyDetector(DetectorConfig(name="bearing", signals=(VIBRATION,), warm_up=50, persist_samples=3))
    results = healthy(detector, 300)
    assert results[:50] == [None] * 50  # the warm-up judges nothing
    judged = [result for result in results[50:] if result is not None]
    assert len(judged) == 250
    assert not any(result.anomalous for result in judged)  # 4 standard deviations: healthy noise stays below
    risen = [detector.update(VIBRATION, 3.5, at(300 + index)) for index in range(4)]
    assert all(result is not None and result.anomalous and result.score > 4 for result in risen)
    assert [result.persistent for result in risen if result is not None] == [False, False, True, True]
    back = detector.update(VIBRATION, 2.0, at(304))
    assert back is not None
    assert not back.anomalous
    assert not back.persistent


def test_a_group_waits_for_all_its_signals_and_skips_bad_samples() -> None:
    detector = AnomalyDetector(
        DetectorConfig(name="bearing", signals=(VIBRATION, TEMPERATURE), method="half_space_trees", warm_up=100)
    )
    assert detector.update(VIBRATION, 2.0, at(0)) is None  # the group is incomplete
    healthy(detector, 400)
    assert detector.update(VIBRATION, math.nan, at(401)) is None
    assert detector.update(VIBRATION, "9.0", at(401)) is None  # type: ignore[arg-type]
    assert detector.update(VIBRATION, 9.0, at(401), good=False) is None
    assert detector.update(SignalRef(submodel_id=SUBMODEL, id_short_path="Other"), 9.0, at(401)) is None
    normal = detector.update(VIBRATION, 2.0, at(402))
    hot_and_shaking = detector.update(TEMPERATURE, 80.0, at(403))
    assert normal is not None
    assert hot_and_shaking is not None
    assert detector.update(VIBRATION, 6.0, at(404)) is not None
    unusual = detector.update(TEMPERATURE, 80.0, at(405))
    assert unusual is not None
    assert not normal.anomalous
    assert unusual.anomalous
    assert unusual.score > normal.score


@pytest.mark.parametrize("method", ["standard_score", "half_space_trees"])
def test_a_persisted_detector_continues_where_it_stopped(method: str) -> None:
    config = DetectorConfig(name="bearing", signals=(VIBRATION, TEMPERATURE), method=method, warm_up=60)  # type: ignore[arg-type]
    original = AnomalyDetector(config)
    healthy(original, 200)
    restored = detector_from_bytes(to_bytes(original), config)
    rng = random.Random(3)
    for index in range(50):
        value = 2.0 + rng.gauss(0, 0.1) + (3.0 if index > 40 else 0.0)
        assert restored.update(VIBRATION, value, at(200 + index)) == original.update(VIBRATION, value, at(200 + index))
    assert restored.streak == original.streak > 0
    changed = config.model_copy(update={"warm_up": 80})
    fresh = detector_from_bytes(to_bytes(original), changed)
    assert fresh.seen == 0  # another configuration: learn again rather than judge with the old model
    assert fresh.update(VIBRATION, 2.0, at(0)) is None


def test_persisted_bytes_that_would_run_code_are_refused(tmp_path: Path) -> None:
    config = DetectorConfig(name="bearing", signals=(VIBRATION,))
    header = to_bytes(AnomalyDetector(config)).split(b"\n", 1)[0] + b"\n"
    target = tmp_path / "pwned"
    calls_os = header + b"cos\nmakedirs\n(V" + str(target).encode() + b"\ntR."
    with pytest.raises(ValueError, match=r"os\.makedirs is not allowed"):
        detector_from_bytes(calls_os, config)
    assert not target.exists()
    via_river = header + b"criver.datasets.base\nos\n."  # a module river imports is not a river class
    with pytest.raises(ValueError, match=r"river\.datasets\.base\.os is not allowed"):
        detector_from_bytes(via_river, config)
    with pytest.raises(ValueError, match="format header missing"):
        detector_from_bytes(b"\x80\x05N.", config)
    with pytest.raises(ValueError, match="holds a int"):
        detector_from_bytes(header + b"I1\n.", config)


def test_rul_of_a_noise_free_line_is_the_exact_crossing() -> None:
    estimator = RulEstimator(RulConfig(name="pads", signal=VIBRATION, failure_threshold=5.0, min_points=5))
    estimate = None
    for second in range(0, 1001, 100):
        estimate = estimator.update(1.0 + 0.001 * second, at(second))
    # 1 + 0.001 t = 5 at t = 4000 s; at t = 1000 s, 3000 s remain; no residuals, so no spread.
    assert estimate is not None
    assert estimate.remaining is not None
    assert estimate.remaining.total_seconds() == pytest.approx(3000.0, rel=1e-9)
    assert estimate.lower is not None
    assert estimate.upper is not None
    assert estimate.lower.total_seconds() == pytest.approx(3000.0, rel=1e-6)
    assert estimate.upper.total_seconds() == pytest.approx(3000.0, rel=1e-6)
    assert estimate.points == 11


def test_rul_of_a_falling_wear_signal_and_of_an_exponential_rise() -> None:
    pads = RulEstimator(RulConfig(name="pads", signal=WEAR, failure_threshold=2.0, rising=False, min_points=5))
    for second in range(0, 601, 60):
        estimate = pads.update(12.0 - 0.005 * second, at(second))
    # 12 - 0.005 t = 2 at t = 2000 s; at t = 600 s, 1400 s remain.
    assert estimate is not None
    assert estimate.remaining is not None
    assert estimate.remaining.total_seconds() == pytest.approx(1400.0, rel=1e-9)

    config = RulConfig(
        name="bearing", signal=VIBRATION, failure_threshold=2.0 + 0.5 * math.exp(3.0), trend="exponential", baseline=2.0
    )
    bearing = RulEstimator(config)
    for second in range(0, 1501, 50):
        estimate = bearing.update(2.0 + 0.5 * math.exp(second / 1000), at(second))
    # 2 + 0.5 exp(t / 1000) reaches the threshold at t = 3000 s; at t = 1500 s, 1500 s remain.
    assert estimate is not None
    assert estimate.remaining is not None
    assert estimate.remaining.total_seconds() == pytest.approx(1500.0, rel=1e-4)


def test_rul_interval_holds_the_truth_and_narrows_as_data_arrives() -> None:
    rng = random.Random(11)
    estimator = RulEstimator(RulConfig(name="pads", signal=VIBRATION, failure_threshold=10.0, history=1000))
    estimates = {}
    for second in range(0, 6001, 10):
        estimate = estimator.update(1.0 + 0.001 * second + rng.gauss(0, 0.05), at(second))
        if second in (2000, 6000):
            estimates[second] = estimate
    for second, estimate in estimates.items():
        truth = 9000 - second  # 1 + 0.001 t = 10 at t = 9000 s
        assert estimate is not None
        assert estimate.lower is not None
        assert estimate.upper is not None
        assert estimate.lower.total_seconds() <= truth <= estimate.upper.total_seconds()
    early, late = estimates[2000], estimates[6000]
    assert early is not None
    assert late is not None
    assert early.upper is not None
    assert early.lower is not None
    assert late.upper is not None
    assert late.lower is not None
    assert (late.upper - late.lower) < (early.upper - early.lower)


def test_rul_none_when_not_degrading_zero_when_worn_and_kept_across_restart() -> None:
    config = RulConfig(name="pads", signal=VIBRATION, failure_threshold=5.0, min_points=5)
    steady = RulEstimator(config)
    for second in range(10):
        estimate = steady.update(2.0 - 0.01 * second, at(second))
    assert estimate is not None
    assert estimate.remaining is None
    assert estimate.upper is None
    assert steady.update(5.5, at(10)) is not None
    worn = steady.estimate(at(10))
    assert worn.remaining == timedelta(0)
    assert steady.update(1.0, at(11), good=False) is None
    rising = RulEstimator(config)
    for second in range(20):
        rising.add(1.0 + 0.1 * second + (0.01 if second % 2 else -0.01), at(second))
    restored = RulEstimator.restore(config, json.loads(json.dumps(rising.state())))
    assert restored.estimate(at(19)) == rising.estimate(at(19))
    with pytest.raises(ValueError, match="5 needed"):
        RulEstimator(config).estimate(at(0))


def test_naive_baseline_extrapolates_the_last_two_samples() -> None:
    # 3.0 -> 3.2 in 60 s: 0.2 per 60 s; 5.0 is 1.8 away: 9 steps of 60 s.
    assert naive_rul([at(0), at(60)], [3.0, 3.2], 5.0) == timedelta(seconds=540)
    assert naive_rul([at(0), at(60)], [3.2, 3.0], 5.0) is None
    assert naive_rul([at(0), at(60)], [4.0, 5.1], 5.0) == timedelta(0)
    assert naive_rul([at(0), at(60)], [8.0, 7.0], 2.0, rising=False) == timedelta(seconds=300)
    assert naive_rul([at(0)], [3.0], 5.0) is None


@pytest.mark.parametrize(
    ("model", "document", "reason"),
    [
        (DetectorConfig, {"name": "a", "signals": [VIBRATION.model_dump(), VIBRATION.model_dump()]}, "named twice"),
        (DetectorConfig, {"name": "a", "signals": [VIBRATION.model_dump()], "method": "half_space_trees",
                          "threshold": 1.5}, "never reached"),
        (DetectorConfig, {"name": "a", "signals": []}, "at least 1"),
        (DetectorConfig, {"name": "a", "signals": [VIBRATION.model_dump()], "method": "isolation"}, "standard_score"),
        (RulConfig, {"name": "a", "signal": VIBRATION.model_dump(), "failure_threshold": 1.0, "trend": "exponential",
                     "baseline": 2.0}, "must lie beyond baseline"),
        (RulConfig, {"name": "a", "signal": VIBRATION.model_dump(), "failure_threshold": 1.0, "history": 5,
                     "min_points": 6}, "exceeds history"),
        (RulConfig, {"name": "a", "signal": VIBRATION.model_dump(), "failure_threshold": "high"}, "valid number"),
    ],
)  # fmt: skip
def test_bad_predictive_configurations_are_refused(
    model: type[DetectorConfig] | type[RulConfig], document: dict[str, object], reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        model.model_validate(document)

"""Analytics, part "detection quality": anomaly detection and RUL on simulated degradation runs.

Each run (seeded, ``--runs`` of them, at least 20) simulates a bearing sampled once a minute: a
healthy vibration level with Gaussian noise, then, from a known onset, an exponential rise that
reaches the failure threshold exactly at a known failure time; the bearing temperature rises with
the vibration and the motor current stays flat. Onset lies at 20-40 % of the life, the life is
2,000-4,000 samples.

Anomaly detection (``aas_server.analytics.predictive.AnomalyDetector``), three detectors per run:
``standard_score`` on the vibration alone (with the default fixed healthy reference, and with
``adapt``: learning on after the warm-up) and ``half_space_trees`` on the group vibration,
temperature, current. An alarm is the start of a run of ``persist_samples`` anomalous samples in a
row (``persistent`` turning true). An alarm before the onset is a false positive; the first alarm
between onset and failure is a true positive (later alarms in the same degradation are the same
event). Precision = TP / (TP + FP), recall = runs with a TP / runs, detection delay = first TP -
onset, in samples and as a share of the onset-to-failure time.

RUL (``RulEstimator``, exponential trend over the healthy baseline fitted to the last 1,000 samples
and to all history, and linear over the last 300) at 50 % and 80 % of
the life, against ``naive_rul`` (last value plus the line through the last two samples): mean
absolute error in samples over the runs where the method gives an estimate, how many runs it gives
one for, and how often the true RUL lies inside the estimate's 90 % interval.

Part "cost" (``--parts cost``): ingest throughput of ``--signals`` (10,000) points at 1 Hz through the
hub's sample path of ``benchmarks/ingest.py`` part 1 (its plant of float32, int16 and coil points:
``MappingEngine`` sink, ``TwinStore.apply``, the change bus with one subscriber draining it as the
OPC UA value sync does), ``--seconds`` simulated seconds a round, with analytics off, with the real
``AlarmService`` (``runtime/analytics.py``: bus subscriber, engine, SQLite alarm database, audit
log) on a limits rule per numeric point plus in turn a rate, stuck, bad-quality or deviation rule
and a state rule on one coil in a hundred, with that plus a standard-score ``AnomalyDetector`` per
float point as one more bus subscriber (the detectors' computation alone), and with the rules plus
the hub's own ``PredictiveService`` (``runtime/predictive.py``: the same detectors, each result
written into the twin's PredictiveMaintenance submodel, states kept in SQLite). The four modes are
interleaved round by round, and a round ends when every subscriber has taken every change. Each
figure is given by the wall clock and by the process's CPU time (all threads), which a machine
shared with other work disturbs less. Goal (issue 13): ratio >= 0.7.

Part "latency" (``--parts latency``): a real hub (the model and OPC UA settings of
``benchmarks/latency.py``, Basic256Sha256 SignAndEncrypt, a read-only user) with a limits rule on each
of its 100 Properties; an asyncua client subscribed to the alarm events of the Server object. Each
round writes a value through the store that crosses the limit (alternately up and down) and waits
for the event of that alarm with that ActiveState: p50 and p99 of value change -> event, beside
the value change -> data-change notification of the same hub (``Floor``) as the floor.

    .venv/bin/python benchmarks/analytics.py [--runs 20] [--seed 1] [--parts quality,cost,latency]
        [--signals 10000 --seconds 20 --rounds 3] [--latency-rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aas_server.analytics.predictive import (
    AnomalyDetector,
    DetectorConfig,
    RulConfig,
    RulEstimate,
    RulEstimator,
    naive_rul,
)
from aas_server.analytics.states import SignalRef

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analytics_cost import cost_report, latency_report

STEP = timedelta(minutes=1)
START = datetime(2026, 1, 1, tzinfo=UTC)
HEALTHY_VIBRATION = 2.0
FAILURE_VIBRATION = 7.0
NOISE = 0.15
SUBMODEL = "urn:example:filler:condition"
VIBRATION = SignalRef(submodel_id=SUBMODEL, id_short_path="Vibration")
TEMPERATURE = SignalRef(submodel_id=SUBMODEL, id_short_path="BearingTemperature")
CURRENT = SignalRef(submodel_id=SUBMODEL, id_short_path="MotorCurrent")


@dataclass(frozen=True)
class Run:
    onset: int
    failure: int
    vibration: list[float]
    temperature: list[float]
    current: list[float]


def simulate(rng: random.Random) -> Run:
    failure = rng.randint(2000, 4000)
    onset = int(failure * rng.uniform(0.2, 0.4))
    rate = rng.uniform(3.0, 6.0) / (failure - onset)  # e-folds over the degradation
    amplitude = (FAILURE_VIBRATION - HEALTHY_VIBRATION) / (math.exp(rate * (failure - onset)) - 1)
    vibration, temperature, current = [], [], []
    for index in range(failure + 1):
        wear = amplitude * (math.exp(rate * (index - onset)) - 1) if index > onset else 0.0
        vibration.append(HEALTHY_VIBRATION + wear + rng.gauss(0, NOISE))
        temperature.append(45.0 + 2.0 * wear + rng.gauss(0, 0.5))
        current.append(12.0 + rng.gauss(0, 0.2))
    return Run(onset, failure, vibration, temperature, current)


@dataclass
class DetectionScore:
    true_positives: int = 0
    false_positives: int = 0
    detected_runs: int = 0
    delays: list[int] | None = None
    delay_shares: list[float] | None = None
    seconds: float = 0.0


def detect(run: Run, config: DetectorConfig, score: DetectionScore) -> None:
    detector = AnomalyDetector(config)
    previous = False
    found = False
    began = time.perf_counter()
    signals = [(signal, series) for signal, series in zip(
        (VIBRATION, TEMPERATURE, CURRENT), (run.vibration, run.temperature, run.current), strict=True
    ) if signal in config.signals]  # fmt: skip
    for index in range(run.failure + 1):
        moment = START + STEP * index
        result = None
        for signal, series in signals:
            result = detector.update(signal, series[index], moment)
        persistent = result is not None and result.persistent
        if persistent and not previous:
            if index < run.onset:
                score.false_positives += 1
            elif not found:
                found = True
                score.true_positives += 1
                score.detected_runs += 1
                assert score.delays is not None
                assert score.delay_shares is not None
                score.delays.append(index - run.onset)
                score.delay_shares.append((index - run.onset) / (run.failure - run.onset))
        previous = persistent
    score.seconds += time.perf_counter() - began


def rul_at(run: Run, share: float, config: RulConfig) -> tuple[RulEstimate | None, timedelta | None, int]:
    """The model's and the naive estimate at ``share`` of the life, and the true RUL in samples."""
    now_index = int(run.failure * share)
    estimator = RulEstimator(config)
    for index in range(now_index):
        estimator.add(run.vibration[index], START + STEP * index)
    estimate = estimator.update(run.vibration[now_index], START + STEP * now_index)
    times = [START + STEP * (now_index - 1), START + STEP * now_index]
    naive = naive_rul(times, run.vibration[now_index - 1 : now_index + 1], FAILURE_VIBRATION)
    return estimate, naive, run.failure - now_index


def _mean(values: list[float]) -> str:
    return f"{statistics.fmean(values):.1f}" if values else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--parts", default="quality", help="comma-separated: quality, cost, latency")
    parser.add_argument("--signals", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=20, help="simulated seconds of samples per cost round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-rounds", type=int, default=200)
    arguments = parser.parse_args()
    if arguments.runs < 20:
        parser.error("at least 20 runs")
    parts = {part.strip() for part in arguments.parts.split(",") if part.strip()}
    if not parts or parts - {"quality", "cost", "latency"}:
        parser.error(f"--parts: unknown part in {arguments.parts!r}")
    if "cost" in parts:
        asyncio.run(cost_report(arguments.signals, arguments.seconds, arguments.rounds))
    if "latency" in parts:
        asyncio.run(latency_report(arguments.latency_rounds))
    if "quality" not in parts:
        return 0
    rng = random.Random(arguments.seed)
    runs = [simulate(rng) for _ in range(arguments.runs)]
    print(
        f"runs: {len(runs)}, seed {arguments.seed}, "
        f"life {min(run.failure for run in runs)}-{max(run.failure for run in runs)} samples"
    )

    detectors = {
        "standard_score(vibration)": DetectorConfig(name="vibration", signals=(VIBRATION,), warm_up=200),
        "standard_score(vibration), adapt": DetectorConfig(
            name="vibration", signals=(VIBRATION,), warm_up=200, adapt=True
        ),
        "half_space_trees(vibration, temperature, current)": DetectorConfig(
            name="bearing", signals=(VIBRATION, TEMPERATURE, CURRENT), method="half_space_trees", warm_up=200
        ),
    }
    print("\n## anomaly detection")
    for label, config in detectors.items():
        score = DetectionScore(delays=[], delay_shares=[])
        for index, run in enumerate(runs):
            detect(run, config.model_copy(update={"seed": index}), score)
        assert score.delays is not None
        assert score.delay_shares is not None
        alarms = score.true_positives + score.false_positives
        precision = score.true_positives / alarms if alarms else float("nan")
        samples = sum(run.failure + 1 for run in runs) * len(config.signals)
        print(
            f"{label}: threshold {config.limit}, persist {config.persist_samples}: precision {precision:.3f}, "
            f"recall {score.detected_runs / len(runs):.3f} ({score.true_positives} TP, {score.false_positives} FP); "
            f"delay median {statistics.median(score.delays) if score.delays else 'n/a'} samples, "
            f"mean {_mean([float(item) for item in score.delays])} samples, "
            f"mean {100 * statistics.fmean(score.delay_shares) if score.delay_shares else float('nan'):.1f} % "
            "of onset-to-failure; "
            f"{samples / score.seconds:,.0f} samples/s"
        )

    print("\n## remaining useful life (in samples = minutes)")
    models = {
        "exponential over baseline, last 1000 samples": RulConfig(
            name="bearing", signal=VIBRATION, failure_threshold=FAILURE_VIBRATION, trend="exponential",
            baseline=HEALTHY_VIBRATION, history=1000, min_points=30,
        ),
        "exponential over baseline, all history": RulConfig(
            name="bearing", signal=VIBRATION, failure_threshold=FAILURE_VIBRATION, trend="exponential",
            baseline=HEALTHY_VIBRATION, history=5000, min_points=30,
        ),
        "linear": RulConfig(
            name="bearing", signal=VIBRATION, failure_threshold=FAILURE_VIBRATION, history=300, min_points=30
        ),
    }  # fmt: skip
    for share in (0.5, 0.8):
        naive_errors: list[float] = []
        model_errors: dict[str, list[float]] = {label: [] for label in models}
        covered: dict[str, int] = {label: 0 for label in models}
        for run in runs:
            for label, rul_config in models.items():
                estimate, naive, truth = rul_at(run, share, rul_config)
                if label == "linear" and naive is not None:  # the same for every model: count it once
                    naive_errors.append(abs(naive / STEP - truth))
                if estimate is not None and estimate.remaining is not None:
                    model_errors[label].append(abs(estimate.remaining / STEP - truth))
                    assert estimate.lower is not None
                    upper = math.inf if estimate.upper is None else estimate.upper / STEP
                    covered[label] += estimate.lower / STEP <= truth <= upper
        true_mean = statistics.fmean(run.failure - int(run.failure * share) for run in runs)
        print(f"at {share:.0%} of life (mean true RUL {true_mean:.0f}):")
        for label in models:
            errors = model_errors[label]
            print(
                f"  {label}: MAE {_mean(errors)} over {len(errors)}/{len(runs)} runs with an estimate; "
                f"90 % interval holds the truth in {covered[label]}/{len(errors)}"
            )
        print(
            f"  naive (last two samples): MAE {_mean(naive_errors)} "
            f"over {len(naive_errors)}/{len(runs)} runs with an estimate"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

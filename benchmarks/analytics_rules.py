"""Monitoring rules evaluation: samples per second through ``MonitoringEngine`` with every rule kind.

A quick micro-benchmark, not a test. ``--signals`` numeric signals (10,000 by default), each with a
limits rule (hi/hihi/lo, deadband, on-delay) and, in turn, one more rule of another kind: rate of
change, stuck value, bad quality for a time, deviation from a set-point (a second element that
changes rarely); one signal in ten more is a boolean with a state rule. Every signal gets one
sample a simulated second (a random walk that crosses the limits now and then, one sample in
500 of bad quality), and the engine one ``tick`` a second. Samples are built before the clock
starts. Printed: samples/s and microseconds per sample through the engine, the floor of the
same loop with a dictionary update instead of the engine, the transitions produced, and, beside
the ingest sample path of ``benchmarks/ingest.py`` part 1, the share of that path's time the rules
would add and the resulting throughput ratio (goal of issue 13: >= 0.7). The ingest figure is
either given (``--ingest-rate``, by default 221,115 samples/s, measured on the idle development
machine on 2026-11-22) or, with ``--with-ingest``, measured between the rounds
(``ingest.measure_engine``, 1,000 points), so that both share the machine's load: only then is the
ratio sound on a busy machine. Two ways in: ``MonitoringEngine.sample`` (a change-bus subscriber
that looks the element up) and inputs resolved once with ``bind``.

    .venv/bin/python benchmarks/analytics_rules.py [--signals 10000] [--seconds 20] [--rounds 3]
        [--ingest-rate N | --with-ingest]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import ingest

from aas_server.analytics.engine import MonitoringEngine
from aas_server.analytics.rules import parse_rules
from aas_server.model.events import Quality

INGEST_MEASURED = 221_115
"""The ingest sample path of ``benchmarks/ingest.py`` on the 2-core development machine (2026-11-22)."""
SUBMODEL = "urn:example:submodel:bench"
T0 = datetime(2026, 12, 6, tzinfo=UTC)
Sample = tuple[str, str, Any, datetime, Quality]


def rules_for(signals: int) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []

    def rule(name: str, path: str, **fields: Any) -> None:
        element = {"submodel": SUBMODEL, "path": path}
        rules.append({"name": name, "element": element, "severity": 500, "message": "{name}: {value}", **fields})

    for index in range(signals):
        path = f"Signal{index}"
        rule(f"limits-{index}", path, kind="limits", hihi=95.0, hi=90.0, lo=10.0, deadband=1.0, on_delay=2)
        match index % 4:
            case 0:
                rule(f"rate-{index}", path, kind="rate", limit=8.0, window=5)
            case 1:
                rule(f"stuck-{index}", path, kind="stuck", duration=30, tolerance=0.001)
            case 2:
                rule(f"bad-{index}", path, kind="bad_quality", duration=10)
            case _:
                setpoint = {"submodel": SUBMODEL, "path": f"Setpoint{index}"}
                rule(f"deviation-{index}", path, kind="deviation", setpoint=setpoint, limit=30.0, deadband=2.0)
        if index % 10 == 0:
            rule(f"state-{index}", f"Flag{index}", kind="state")
    return {"rules": rules}


def samples_for(signals: int, seconds: int, seed: int) -> list[list[Sample]]:
    generator = random.Random(seed)
    values = [generator.uniform(30, 70) for _ in range(signals)]
    per_second: list[list[Sample]] = []
    for second in range(seconds):
        now = T0 + timedelta(seconds=second)
        batch: list[Sample] = []
        for index in range(signals):
            values[index] = min(110.0, max(-10.0, values[index] + generator.gauss(0, 3)))
            quality = Quality.BAD if generator.random() < 0.002 else Quality.GOOD
            batch.append((SUBMODEL, f"Signal{index}", values[index], now, quality))
            if index % 4 == 3 and second % 10 == 0:
                batch.append((SUBMODEL, f"Setpoint{index}", 50.0, now, Quality.GOOD))
            if index % 10 == 0:
                batch.append((SUBMODEL, f"Flag{index}", values[index] > 85, now, Quality.GOOD))
        per_second.append(batch)
    return per_second


def run_engine(
    engine: MonitoringEngine, per_second: list[list[Sample]], offset: int, bound: bool
) -> tuple[float, int, int]:
    """``bound``: through ``MonitoringEngine.bind`` inputs resolved per sample before the clock starts (as the
    ingest path keeps its sink per point), else ``MonitoringEngine.sample``."""
    tick = engine.tick
    transitions = 0
    count = 0
    shift = timedelta(seconds=offset)
    shifted = [[(s, p, v, t + shift, q) for s, p, v, t, q in batch] for batch in per_second]
    inputs = {key: engine.bind(*key) for key in engine.watched_elements}
    resolved = [[(inputs[(s, p)], v, t, q) for s, p, v, t, q in batch] for batch in shifted]
    started = time.perf_counter()
    for batch, bound_batch in zip(shifted, resolved, strict=True):
        if bound:
            for element_input, value, at, quality in bound_batch:
                if element_input is not None:
                    transitions += len(element_input(value, at, quality))
        else:
            sample = engine.sample
            for submodel, path, value, at, quality in batch:
                transitions += len(sample(submodel, path, value, at, quality))
        count += len(batch)
        transitions += len(tick(batch[0][3] + timedelta(seconds=0.999)))
    return time.perf_counter() - started, count, transitions


def run_floor(per_second: list[list[Sample]]) -> tuple[float, int]:
    latest: dict[tuple[str, str], Any] = {}
    count = 0
    started = time.perf_counter()
    for batch in per_second:
        for submodel, path, value, _at, _quality in batch:
            latest[(submodel, path)] = value
        count += len(batch)
    return time.perf_counter() - started, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--signals", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--ingest-rate",
        type=float,
        default=INGEST_MEASURED,
        help="samples/s of the ingest sample path on this machine (benchmarks/ingest.py part 1)",
    )
    parser.add_argument(
        "--with-ingest",
        action="store_true",
        help="measure the ingest sample path (benchmarks/ingest.py part 1, 1,000 points) between the rounds instead",
    )
    parser.add_argument("--ingest-seconds", type=float, default=2.0)
    arguments = parser.parse_args()

    rules = parse_rules(rules_for(arguments.signals), "<benchmark>")
    per_second = samples_for(arguments.signals, arguments.seconds, arguments.seed)
    engine = MonitoringEngine(rules)
    print(f"rules: {len(rules.rules)} on {len(engine.watched_elements)} elements; {arguments.seconds} s simulated")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    best = {"sample": 0.0, "bound": 0.0}
    best_floor = 0.0
    ingest_rates: list[float] = []
    run_engine(engine, per_second, 0, bound=False)  # warm-up: the first pass builds the timers
    for round_index in range(arguments.rounds):
        if arguments.with_ingest:
            figures = asyncio.run(ingest.measure_engine(1000, arguments.ingest_seconds, 1, "never"))
            ingest_rates.extend(figures.sample_path)
            print(f"round {round_index + 1} ingest: {figures.sample_path[-1]:,.0f} samples/s (sample path)")
        for way in ("sample", "bound"):
            offset = (1 + 2 * round_index + (way == "bound")) * arguments.seconds
            elapsed, count, transitions = run_engine(engine, per_second, offset, bound=way == "bound")
            rate = count / elapsed
            best[way] = max(best[way], rate)
            print(
                f"round {round_index + 1} {way:6s}: {rate:,.0f} samples/s ({1e6 / rate:.2f} us/sample), "
                f"{transitions} transitions"
            )
        floor_elapsed, floor_count = run_floor(per_second)
        best_floor = max(best_floor, floor_count / floor_elapsed)
    print(f"floor (dict update per sample): {best_floor:,.0f} samples/s")
    ingest_rate = max(ingest_rates) if ingest_rates else arguments.ingest_rate
    source = "measured in this run (best round)" if ingest_rates else "given"
    for way, rate in best.items():
        share = ingest_rate / rate
        print(
            f"best {way}: {rate:,.0f} samples/s; beside an ingest path of {ingest_rate:,.0f} samples/s ({source}) "
            f"the rules add {share:.0%} to its time: throughput ratio {1 / (1 + share):.2f} (goal >= 0.7)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What-if simulation: simulated hours per wall-clock second, and the speed-up of parallel replications.

The bottling line of the demo as a simulation description: a filler (normal cycle 2.0 ± 0.2 s,
MTBF 30 min, lognormal MTTR 2 ± 1 min, 1 % scrap), a conveyor buffer of 30 bottles, and a capper
(empirical cycle 2.1-2.3 s, MTBF 40 min, MTTR 90 s). Two figures:

* speed: one replication of ``--hours`` simulated hours in this process, as simulated hours per
  wall-clock second (best of ``--rounds``);
* parallelism: ``--replications`` replications of an 8-hour shift with 1 worker and with
  ``--workers`` worker processes, cold (spawned for the job, so the time includes starting them)
  and warm (a pool started before and reused), the speed-ups, and a check that all give identical
  results (the same seed gives the same figures whatever the number of workers).

* validation (``--parts validation``): a demo day recorded from the demo device model (24 h of
  simulated time, seeded filler jams, recorded with the hub's machine states and ISO 22400 KPI
  functions), the line calibrated from it, and the simulated baseline's throughput and OEE against
  the recorded ones (``aas_server/runtime/demo_day.py``; goal: within 5 %).

* latency (``--parts latency``): the p99 of REST ``$value`` GETs on the demo hub while a job of
  ``--replications`` replications runs, against the p99 with none running, same run (goal <= 1.5x);
  ``benchmarks/simulation_rest.py``, which it runs.

    .venv/bin/python benchmarks/simulation.py [--parts speed,parallel,validation,latency] [--hours 200]
        [--replications 30] [--workers 2] [--validation-replications 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aas_server.simulation.description import LineDescription, parse_line
from aas_server.simulation.model import run_replication
from aas_server.simulation.runner import run_scenario, worker_pool


def bottling_line(horizon_hours: float, replications: int, seed: int = 1) -> LineDescription:
    """The demo's filler -> conveyor -> capper line, as a simulation description."""
    document: dict[str, Any] = {
        "name": "bottling",
        "stations": [
            {
                "name": "filler",
                "cycle_time": {"kind": "normal", "mean": 2.0, "std": 0.2},
                "mtbf": {"kind": "exponential", "mean": 1800},
                "mttr": {"kind": "lognormal", "mean": 120, "std": 60},
                "scrap_rate": 0.01,
            },
            {
                "name": "capper",
                "cycle_time": {"kind": "empirical", "values": [2.1, 2.2, 2.3]},
                "mtbf": {"kind": "exponential", "mean": 2400},
                "mttr": {"kind": "exponential", "mean": 90},
            },
        ],
        "buffers": [{"name": "conveyor", "capacity": 30}],
        "horizon": horizon_hours * 3600,
        "warmup": 600,
        "replications": replications,
        "seed": seed,
    }
    return parse_line(document)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=200.0, help="simulated hours for the speed figure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replications", type=int, default=30)
    parser.add_argument("--shift-hours", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--parts",
        default="speed,parallel",
        help="comma-separated parts to run: speed, parallel, validation, latency (default: speed,parallel)",
    )
    parser.add_argument("--validation-replications", type=int, default=10)
    arguments = parser.parse_args()
    parts = {part.strip() for part in arguments.parts.split(",") if part.strip()}
    unknown = parts - PARTS
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}; known: {', '.join(sorted(PARTS))}")
    print(f"cpus: {os.cpu_count()}")
    if "speed" in parts:
        speed(arguments)
    if "parallel" in parts:
        parallel(arguments)
    if "validation" in parts:
        validation(arguments)
    if "latency" in parts:
        latency(arguments)


def speed(arguments: argparse.Namespace) -> None:
    speed_line = bottling_line(arguments.hours, 1)
    best = float("inf")
    for _ in range(arguments.rounds):
        started = time.perf_counter()
        result = run_replication(speed_line, 0)
        best = min(best, time.perf_counter() - started)
    print(f"simulated_hours: {arguments.hours:g}")
    print(f"wall_seconds: {best:.3f}")
    print(f"simulated_hours_per_wall_second: {arguments.hours / best:.0f}")
    print(f"throughput_per_hour: {result.metrics['throughput']:.1f}  oee: {result.metrics['oee']:.3f}")


def parallel(arguments: argparse.Namespace) -> None:
    shift = bottling_line(arguments.shift_hours, arguments.replications)
    started = time.perf_counter()
    serial = run_scenario(shift, workers=1)
    serial_seconds = time.perf_counter() - started
    started = time.perf_counter()
    parallel = run_scenario(shift, workers=arguments.workers)
    parallel_seconds = time.perf_counter() - started
    with worker_pool(arguments.workers) as pool:
        run_scenario(bottling_line(0.5, arguments.workers), executor=pool)  # start the workers
        started = time.perf_counter()
        warm = run_scenario(shift, executor=pool)
        warm_seconds = time.perf_counter() - started
    identical = [r.metrics for r in serial.replications] == [r.metrics for r in parallel.replications]
    identical = identical and [r.metrics for r in warm.replications] == [r.metrics for r in parallel.replications]
    throughput = serial.estimates["throughput"]
    print(f"replications: {arguments.replications} x {arguments.shift_hours:g} h")
    print(f"seconds_1_worker: {serial_seconds:.2f}")
    print(f"seconds_{arguments.workers}_workers: {parallel_seconds:.2f}")
    print(f"speed_up_cold: {serial_seconds / parallel_seconds:.2f}  (workers started for the job)")
    print(f"seconds_{arguments.workers}_workers_warm_pool: {warm_seconds:.2f}")
    print(f"speed_up_warm: {serial_seconds / warm_seconds:.2f}  (a long-lived pool, as the hub would keep)")
    print(f"identical_results: {identical}")
    print(
        f"throughput_per_hour: {throughput.mean:.1f} ± {throughput.half_width:.1f} (95 %), "
        f"bottleneck: {serial.bottleneck} ({serial.bottleneck_share:.0%} of replications)"
    )
    if not identical:
        raise SystemExit("results differ between 1 and several workers")


def validation(arguments: argparse.Namespace) -> None:
    from aas_server.runtime.demo_day import FILLER, validate_against_demo_day

    started = time.perf_counter()
    result = validate_against_demo_day(replications=arguments.validation_replications, workers=arguments.workers)
    seconds = time.perf_counter() - started
    day = result.day
    filler = result.report.stations[0]
    print(f"validation_demo_day: {day.window.start.isoformat()} + 24 h, {len(day.jams)} filler jams")
    print(
        f"recorded_availability: {day.kpis[FILLER].availability:.4f}  performance: "
        f"{day.kpis[FILLER].effectiveness:.4f}  observed_hours: {day.observed_hours:g}"
    )
    for parameter in (filler.cycle_time, filler.mtbf, filler.mttr):
        print(
            f"calibrated_filler_{parameter.parameter}: {parameter.family} mean {parameter.mean:.4g} s, "
            f"n={parameter.samples}, KS D={parameter.ks_statistic:.3f} p={parameter.ks_p_value:.3g}"
        )
    for name, (recorded, simulated, half_width, relative) in result.figures().items():
        print(
            f"validation_{name}: recorded {recorded:.4f}  simulated {simulated:.4f} ± {half_width:.4f} "
            f"({arguments.validation_replications} replications)  ratio {simulated / recorded:.4f} ({relative:+.2%})"
        )
    print(f"validation_seconds: {seconds:.1f}")
    worst = max(abs(relative) for *_, relative in result.figures().values())
    if worst > 0.05:
        raise SystemExit(f"the simulated baseline is {worst:.1%} off the recorded day (goal: within 5 %)")


def latency(arguments: argparse.Namespace) -> None:
    """The p99 of REST ``$value`` while a job of ``--replications`` runs on the hub, against idle: its own script,
    since it runs the demo hub and a client process (``benchmarks/simulation_rest.py``)."""
    script = Path(__file__).with_name("simulation_rest.py")
    command = [sys.executable, str(script), "--replications", str(arguments.replications)]
    subprocess.run([*command, "--workers", str(arguments.workers)], check=True)


PARTS = {"speed", "parallel", "validation", "latency"}

if __name__ == "__main__":
    main()

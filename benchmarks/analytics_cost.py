"""The "cost" and "latency" parts of ``benchmarks/analytics.py`` (see its docstring)."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from bisect import bisect_right
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import ingest
import latency
import yaml
from asyncua import Client, ua
from asyncua.common.events import get_filter_from_event_type
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.object_ids import ObjectIds
from basyx.aas import model
from pydantic import SecretStr

from aas_server.analytics.predictive import AnomalyDetector, DetectorConfig
from aas_server.analytics.rules import parse_rules
from aas_server.analytics.states import SignalRef
from aas_server.config import (
    AccessOperation,
    AccessRule,
    AnalyticsSettings,
    HubSettings,
    OpcUaSettings,
    PredictiveSettings,
    RestSettings,
    Role,
    SecuritySettings,
    UserSettings,
)
from aas_server.mapping.schema import DataType
from aas_server.model.events import Quality, RawSample, ValueChanged, utc_now
from aas_server.opcua.node_ids import node_id_for
from aas_server.persistence.alarms import AlarmDatabase
from aas_server.runtime.analytics import AlarmService
from aas_server.runtime.hub import Hub
from aas_server.runtime.predictive import PredictiveService, start_predictive
from aas_server.security.audit import AuditLog
from aas_server.store.bus import Subscription
from aas_server.store.twin_store import StoreEvent, TwinStore

CHUNK = 1000
"""Samples applied between two yields to the event loop (as ``benchmarks/ingest.py`` feeds them)."""
GOAL = 0.7


def cost_rules(points: int) -> dict[str, Any]:
    """Rules on the ingest benchmark's plant (``ingest.build_submodels``, one unit of ``points`` points).

    Every numeric point has a limits rule (deadband, on-delay; one point in 50 has its high limit
    inside its values' range, so it comes and goes, the others stay quiet) and in turn a rate,
    stuck, bad-quality or deviation rule (the set-point: the next float point); one coil in ten a
    state rule.
    """
    submodel = ingest.submodel_id(1)
    rules: list[dict[str, Any]] = []

    def rule(name: str, index: int, **fields: Any) -> None:
        element = {"submodel": submodel, "path": ingest.id_short(index)}
        rules.append({"name": name, "element": element, "severity": 500, "message": "{name}: {value}", **fields})

    floats = [index for index in range(points) if ingest.point_kind(index) is DataType.FLOAT32]
    for index in range(points):
        kind = ingest.point_kind(index)
        if kind is DataType.BOOL:
            if index % 100 == 9:
                rule(f"state-{index}", index, kind="state")
            continue
        if kind is DataType.INT16:
            high = 0.0 if index % 50 == 6 else 40_000.0
        elif index % 2 == 0:  # °C -> K: 283.15 to 286.7
            high = 285.0 if index % 50 == 0 else 400.0
        else:  # bar -> kPa: 1,000 to 1,356
            high = 1_200.0 if index % 50 == 1 else 5_000.0
        rule(f"limits-{index}", index, kind="limits", hi=high, deadband=0.5, on_delay=2)
        match index % 4:
            case 0:
                rule(f"rate-{index}", index, kind="rate", limit=1e6, window=5)
            case 1:
                rule(f"stuck-{index}", index, kind="stuck", duration=30, tolerance=0.001)
            case 2:
                rule(f"bad-{index}", index, kind="bad_quality", duration=10)
            case _:
                following = floats[bisect_right(floats, index) % len(floats)]
                setpoint = {"submodel": submodel, "path": ingest.id_short(following)}
                rule(f"deviation-{index}", index, kind="deviation", setpoint=setpoint, limit=1e6, deadband=1.0)
    return {"rules": rules}


def cost_samples(points: int, seconds: int) -> list[list[RawSample]]:
    """One sample per point a second for ``seconds`` seconds from a second from now, in chunks of ``CHUNK``.

    The samples run ahead of the wall clock that the alarm service's ticks read (a round takes less
    than ``seconds``), so a tick lets fall due only what the samples' own time has passed, as at 1 Hz.
    """
    start = utc_now() + timedelta(seconds=1)
    samples = [
        RawSample(
            ingest.device_name(1), ingest.point_name(1, index), ingest.raw_value(index, second % ingest.FRAMES), moment
        )
        for second, moment in ((second, start + timedelta(seconds=second)) for second in range(seconds))
        for index in range(points)
    ]
    return [samples[offset : offset + CHUNK] for offset in range(0, len(samples), CHUNK)]


class Detectors:
    """One standard-score ``AnomalyDetector`` per float point, fed by its own change bus subscriber: the
    detectors' computation alone, without writing their results into the twin (mode "detectors only")."""

    def __init__(self, store: TwinStore, points: int) -> None:
        self.subscription: Subscription[StoreEvent] = store.bus.subscribe("anomaly benchmark", maxsize=100_000)
        self.detectors: dict[str, tuple[AnomalyDetector, SignalRef]] = {}
        for index in range(points):
            if ingest.point_kind(index) is not DataType.FLOAT32:
                continue
            path = ingest.id_short(index)
            signal = SignalRef(submodel_id=ingest.submodel_id(1), id_short_path=path)
            detector = AnomalyDetector(DetectorConfig(name=path, signals=(signal,), warm_up=WARM_UP))
            self.detectors[path] = (detector, signal)
        self.anomalous = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        detectors = self.detectors
        while True:
            events = [await self.subscription.get(), *self.subscription.get_nowait_all()]
            for event in events:
                if isinstance(event, ValueChanged) and (found := detectors.get(event.id_short_path)) is not None:
                    result = found[0].update(found[1], event.value, event.source_time, event.quality is Quality.GOOD)
                    if result is not None and result.anomalous:
                        self.anomalous += 1

    async def __aenter__(self) -> Detectors:
        self._task = asyncio.create_task(self._run(), name="anomaly benchmark")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.subscription.close()


WARM_UP = 10
"""Samples each detector learns before it scores: half of a 20 s round."""


def detector_settings(points: int) -> list[dict[str, object]]:
    """A standard-score detector on each float point, as ``analytics.predictive.detectors`` items."""
    return [
        {
            "name": ingest.id_short(index),
            "signals": [{"submodel_id": ingest.submodel_id(1), "id_short_path": ingest.id_short(index)}],
            "warm_up": WARM_UP,
        }
        for index in range(points)
        if ingest.point_kind(index) is DataType.FLOAT32
    ]


async def start_hub_predictive(stack: AsyncExitStack, store: TwinStore, points: int, folder: Path) -> PredictiveService:
    """The hub's own predictive maintenance (``start_predictive``) on the benchmark plant: a shell for its
    submodel, a PredictiveMaintenance submodel with a result collection per detector, its SQLite file."""
    store.add(
        model.AssetAdministrationShell(
            model.AssetInformation(global_asset_id="urn:aas-server:benchmark:ingest:asset:1"),
            "urn:aas-server:benchmark:ingest:shell:1",
            submodel={model.ModelReference.from_referable(store.submodel(ingest.submodel_id(1)))},
        )
    )
    settings = HubSettings(
        data_dir=folder / f"data-{time.monotonic_ns()}",
        analytics=AnalyticsSettings(predictive=PredictiveSettings(detectors=detector_settings(points))),
    )
    settings.data_dir.mkdir()
    service = await start_predictive(stack, settings, store)
    assert service is not None
    return service


async def _settled(subscriptions: list[Subscription[StoreEvent]], service: AlarmService | None) -> None:
    """Until every subscriber has taken every change (and the alarm service has committed them)."""
    # each pass lets the subscribers' tasks run once; no timing is assumed, the queues are looked at
    while any(subscription.qsize() for subscription in subscriptions):  # noqa: ASYNC110
        await asyncio.sleep(0)
    if service is not None:
        async with service._lock:  # its current batch is committed
            pass


async def cost_round(
    points: int, seconds: int, rules_on: bool, detectors_on: bool, folder: Path, hub_predictive: bool = False
) -> tuple[float, float, int, int, int]:
    """Samples per second through the hub's sample path (by the wall clock, and by the process's CPU time:
    every thread, the SQLite and audit writers included), alarm transitions committed, anomalous samples,
    changes the alarm service's bus subscription dropped (it fell more than 100,000 behind).

    ``detectors_on``: the bare detectors (``Detectors``); ``hub_predictive``: the hub's ``PredictiveService``,
    which also writes each result (score, flags, time) into the twin and keeps the detectors' states.
    """
    mapping = ingest.build_mapping(1, points, 502, 1.0)
    store, path = ingest.new_store(1, points, mapping)
    async with AsyncExitStack() as stack:
        drain = await stack.enter_async_context(ingest.Drain(store))
        subscriptions = [drain.subscription]
        service: AlarmService | None = None
        detectors: Detectors | None = None
        committed = [0]
        if rules_on:
            rules = parse_rules(cost_rules(points), "rules.yaml").rules
            database = await stack.enter_async_context(AlarmDatabase(folder / f"alarms-{time.monotonic_ns()}.sqlite"))
            service = await stack.enter_async_context(
                AlarmService(store, rules, database, AuditLog(folder / f"audit-{time.monotonic_ns()}.jsonl"))
            )
            assert service._subscription is not None
            subscriptions.append(service._subscription)

            def count(*_: Any) -> None:
                committed[0] += 1

            service.subscribe(count)
        if detectors_on:
            detectors = await stack.enter_async_context(Detectors(store, points))
            subscriptions.append(detectors.subscription)
        predictive: PredictiveService | None = None
        if hub_predictive:
            predictive = await start_hub_predictive(stack, store, points, folder)
            assert predictive._subscription is not None
            subscriptions.append(predictive._subscription)
        chunks = cost_samples(points, seconds)
        on_sample = path.on_sample
        started = time.perf_counter()
        cpu_started = time.process_time()
        for chunk in chunks:
            for sample in chunk:
                on_sample(sample)
            await asyncio.sleep(0)
        await _settled(subscriptions, service)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        dropped = service._subscription.dropped if service is not None and service._subscription is not None else 0
        anomalous = detectors.anomalous if detectors is not None else 0
        if predictive is not None:
            anomalous = sum(
                bool(store.state(f"{shell}/predictive-maintenance", f"{name}.Anomaly").value)  # type: ignore[union-attr]
                for shell in ("urn:aas-server:benchmark:ingest:shell:1",)
                for name in predictive.detectors
            )
        return path.samples / elapsed, path.samples / cpu, committed[0], anomalous, dropped


async def cost_report(points: int, seconds: int, rounds: int) -> None:
    rules = len(cost_rules(points)["rules"])
    print(
        f"\n## cost: {points} points at 1 Hz through the ingest sample path, {seconds} s of samples per round, "
        f"{rules} rules, {sum(ingest.point_kind(index) is DataType.FLOAT32 for index in range(points))} detectors"
    )
    modes = {
        "analytics off": (False, False, False),
        "rules only": (True, False, False),
        "rules + anomaly detectors (computation only)": (True, True, False),
        "rules + anomaly detection (hub's PredictiveService)": (True, False, True),
    }
    rates: dict[str, list[float]] = {label: [] for label in modes}
    cpu_rates: dict[str, list[float]] = {label: [] for label in modes}
    last: dict[str, tuple[int, int, int]] = {}
    with tempfile.TemporaryDirectory() as temporary:
        for _ in range(rounds):  # interleaved, so that every mode shares the machine's load
            for label, (rules_on, detectors_on, hub_predictive) in modes.items():
                rate, cpu_rate, transitions, anomalous, dropped = await cost_round(
                    points, seconds, rules_on, detectors_on, Path(temporary), hub_predictive
                )
                rates[label].append(rate)
                cpu_rates[label].append(cpu_rate)
                last[label] = (transitions, anomalous, dropped)
    baseline = statistics.median(rates["analytics off"])
    cpu_baseline = statistics.median(cpu_rates["analytics off"])
    for label, figures in rates.items():
        median = statistics.median(figures)
        cpu_median = statistics.median(cpu_rates[label])
        transitions, anomalous, dropped = last[label]
        print(
            f"{label}: {', '.join(f'{rate:,.0f}' for rate in figures)} samples/s (median {median:,.0f}, "
            f"ratio to off {median / baseline:.2f}); by CPU time {1e6 / cpu_median:.1f} us/sample "
            f"(ratio to off {cpu_median / cpu_baseline:.2f}); last round: {transitions} alarm transitions "
            f"committed, {anomalous} anomalous, {dropped} changes dropped by the alarm service's subscription"
        )
    for label in list(modes)[2:]:
        ratio = statistics.median(rates[label]) / baseline
        cpu_ratio = statistics.median(cpu_rates[label]) / cpu_baseline
        verdict = "met" if ratio >= GOAL else "NOT met"
        print(
            f"ratio with every rule kind and {label[8:]}: {ratio:.2f} (goal >= {GOAL}: {verdict}); "
            f"by CPU time {cpu_ratio:.2f}"
        )


# --- latency ---------------------------------------------------------------------------------------------

LIMIT = 100.0


class _Events:
    def __init__(self) -> None:
        self.waiting: dict[tuple[str, bool], asyncio.Future[float]] = {}

    def expect(self, name: str, active: bool) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[(name, active)] = future
        return future

    def event_notification(self, event: Any) -> None:
        key = (str(getattr(event, "ConditionName", "")), bool(getattr(event, "ActiveState/Id", False)))
        future = self.waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())


async def measure_latency(rounds: int) -> tuple[list[float], list[float]]:
    """Seconds from a store change to its alarm event, and to its data-change notification."""
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        rules = {
            "rules": [
                {"name": f"high-{index:03d}", "element": {"submodel": latency.SUBMODEL_ID, "path": f"P{index:03d}"},
                 "kind": "limits", "hi": LIMIT, "severity": 600, "message": "{name}: {value}"}
                for index in range(latency.POINTS)
            ]
        }  # fmt: skip
        rules_file = folder / "rules.yaml"
        rules_file.write_text(yaml.safe_dump(rules), encoding="utf-8")
        settings = HubSettings(
            data_dir=folder / "data",
            twins=[latency.write_model(folder)],
            rest=RestSettings(port=0),
            opcua=OpcUaSettings(
                port=0,
                users=[UserSettings(name="bench", password=SecretStr("bench"), role=Role.READ_ONLY)],
                trust_all_client_certificates=True,  # benchmark only: its client certificate is made per run
            ),
            security=SecuritySettings(
                rules=[AccessRule(roles=[Role.READ_ONLY.value], operations=[AccessOperation.READ])]
            ),
            analytics=AnalyticsSettings(rules_files=[rules_file]),
            log_level="WARNING",
        )
        certificate, key = latency.client_certificate(folder)
        async with Hub(settings) as hub:
            assert hub.opcua is not None
            client = Client(hub.opcua.endpoint_url, timeout=10)
            client.application_uri = latency.CLIENT_URI
            await client.set_security(
                SecurityPolicyBasic256Sha256, str(certificate), str(key), mode=ua.MessageSecurityMode.SignAndEncrypt
            )
            client.set_user("bench")
            client.set_password("bench")
            async with client:
                events = _Events()
                subscription = await client.create_subscription(0, events)
                event_filter = await get_filter_from_event_type(
                    [client.get_node(ObjectIds.AlarmConditionType), client.get_node(ObjectIds.ExclusiveLimitAlarmType)]
                )
                event_filter.SelectClauses.append(
                    ua.SimpleAttributeOperand(
                        TypeDefinitionId=ua.NodeId(cast(Any, ObjectIds.BaseEventType)),
                        BrowsePath=[ua.QualifiedName("ConditionName", 0)],
                        AttributeId=ua.AttributeIds.Value,
                    )
                )
                await subscription.subscribe_alarms_and_conditions(client.nodes.server, evfilter=event_filter)
                notifications = latency.Notifications()
                values = await client.create_subscription(0, notifications)
                floor_node = client.get_node(
                    ua.NodeId(
                        ua.String(node_id_for(latency.SUBMODEL_ID, latency.FLOOR)), ua.Int16(hub.opcua.namespace_index)
                    )
                )
                await values.subscribe_data_change([floor_node], sampling_interval=ua.Double(0))

                async def one(arrived: asyncio.Future[float], path: str, value: float) -> float:
                    started = time.perf_counter()
                    now = utc_now()
                    hub.store.apply(ValueChanged(latency.SUBMODEL_ID, path, value, now, server_time=now))
                    return (await asyncio.wait_for(arrived, 5.0)) - started

                alarm: list[float] = []
                floor: list[float] = []
                for number in range(rounds):
                    index = number % latency.POINTS
                    active = (number // latency.POINTS) % 2 == 0
                    value = LIMIT + 10.0 + number if active else LIMIT - 10.0 - number
                    alarm.append(await one(events.expect(f"high-{index:03d}", active), f"P{index:03d}", value))
                    floor_value = 1.5 + number
                    floor.append(
                        await one(
                            notifications.expect(node_id_for(latency.SUBMODEL_ID, latency.FLOOR), floor_value),
                            latency.FLOOR,
                            floor_value,
                        )
                    )
                await subscription.delete()
                await values.delete()
    return alarm, floor


async def latency_report(rounds: int) -> None:
    alarm, floor = await measure_latency(rounds)
    percentile: Callable[[list[float], float], float] = latency.percentile
    print(f"\n## alarm latency: store value change -> OPC UA alarm event, {len(alarm)} rounds")
    print(
        f"alarm event: p50 {1000 * percentile(alarm, 0.5):.1f} ms, p99 {1000 * percentile(alarm, 0.99):.1f} ms; "
        f"data-change notification of the same hub (floor): p50 {1000 * percentile(floor, 0.5):.1f} ms, "
        f"p99 {1000 * percentile(floor, 0.99):.1f} ms"
    )

"""Predictive maintenance wired into the hub: anomaly detectors and RUL estimators on the change bus.

``PredictiveService`` builds the detectors (``DetectorConfig``) and wear signals (``RulConfig``) of
``settings.analytics.predictive`` (each checked at start: an item that does not validate, or names
an element that is not a numeric Property of the model, stops the start with its place, e.g.
``analytics.predictive.wear[0].signal``). It follows the change bus like the alarms: each
``ValueChanged`` of a watched element (with its source time and quality; bad-quality samples are
skipped by the core) updates the detectors and estimators that use it. The results are written as
read-only twin values (binding source ``predictive``: REST and OPC UA writes are refused) into a
``PredictiveMaintenance`` submodel of each shell that references a watched
submodel (id ``<shell id>/predictive-maintenance``, created or replaced at start, referenced from
the shell), so they are on REST, OPC UA, MQTT and in the history like any value:

* per wear signal, a collection ``<name>`` with ``RemainingUsefulLife``, ``RemainingUsefulLifeLower``,
  ``RemainingUsefulLifeUpper`` (xs:double, seconds) and ``LastUpdate`` (xs:dateTime); a trend that
  does not head for the threshold leaves the RUL values as they were;
* per detector, a collection ``<name>`` with ``AnomalyScore`` (xs:double), ``Anomaly`` and
  ``AnomalyPersistent`` (xs:boolean) and ``LastUpdate``.

After each batch of changes the states of the detectors and estimators that changed are written to
``predictive.sqlite`` (``persistence/predictive.py``) and restored at the next start; a detector
whose configuration changed starts afresh.

Alarms on the results are ordinary monitoring rules on these Properties (a ``state`` rule on
``AnomalyPersistent``, a ``limits`` rule with ``lo`` on ``RemainingUsefulLife``).

Left out: the IDTA 02048 structure, settings changed while running.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

import orjson
from basyx.aas import model
from pydantic import ValidationError

from aas_server.analytics.predictive import (
    AnomalyDetector,
    AnomalyResult,
    DetectorConfig,
    RulConfig,
    RulEstimate,
    RulEstimator,
    detector_from_bytes,
    to_bytes,
)
from aas_server.analytics.states import SignalRef
from aas_server.config import HubSettings
from aas_server.errors import ConfigurationError, NotFoundError, PersistenceError
from aas_server.model import values as typed_values
from aas_server.model.events import Quality, QualityReason, ValueChanged, utc_now
from aas_server.persistence.predictive import PredictiveDatabase
from aas_server.runtime.bus_service import BusService
from aas_server.runtime.submodels import install_submodel
from aas_server.store.bus import Subscription
from aas_server.store.twin_store import ElementBinding, StoreEvent, TwinStore

_LOG = logging.getLogger(__name__)

PREDICTIVE_SEMANTIC_ID = "urn:aas-server:analytics:PredictiveMaintenance:1:0"
"""The semanticId of the hub's PredictiveMaintenance submodels (documented in docs/analytics.md)."""
_ELEMENT_SEMANTIC_IDS = {
    "RemainingUsefulLife": "urn:aas-server:analytics:PredictiveMaintenance:1:0:RemainingUsefulLife",
    "RemainingUsefulLifeLower": "urn:aas-server:analytics:PredictiveMaintenance:1:0:RemainingUsefulLifeLower",
    "RemainingUsefulLifeUpper": "urn:aas-server:analytics:PredictiveMaintenance:1:0:RemainingUsefulLifeUpper",
    "AnomalyScore": "urn:aas-server:analytics:PredictiveMaintenance:1:0:AnomalyScore",
    "Anomaly": "urn:aas-server:analytics:PredictiveMaintenance:1:0:Anomaly",
    "AnomalyPersistent": "urn:aas-server:analytics:PredictiveMaintenance:1:0:AnomalyPersistent",
    "LastUpdate": "urn:aas-server:analytics:PredictiveMaintenance:1:0:LastUpdate",
}
_NUMERIC = (model.datatypes.Double, model.datatypes.Float, model.datatypes.Decimal, model.datatypes.Integer)
_ORIGIN = "predictive"
SOURCE = "predictive"
"""The binding source of the result Properties: read-only, REST and OPC UA writes are refused."""
_DETECTOR, _WEAR = "detector", "wear"


def parse_predictive(settings: HubSettings, store: TwinStore | None) -> tuple[list[DetectorConfig], list[RulConfig]]:
    """The configured detectors and wear signals; ``ConfigurationError`` names each bad item's place."""
    section = settings.analytics.predictive
    problems: list[str] = []
    detectors: list[DetectorConfig] = []
    wear: list[RulConfig] = []
    names: set[str] = set()
    for kind, items, target in (("detectors", section.detectors, detectors), ("wear", section.wear, wear)):
        for index, item in enumerate(items):
            place = f"analytics.predictive.{kind}[{index}]"
            try:
                parsed: DetectorConfig | RulConfig = (
                    DetectorConfig.model_validate(item) if kind == "detectors" else RulConfig.model_validate(item)
                )
            except ValidationError as error:
                for problem in error.errors():
                    where = ".".join(str(part) for part in problem["loc"])
                    problems.append(f"{place}{'.' + where if where else ''}: {problem['msg']}")
                continue
            if parsed.name in names or _id_short(parsed.name) is None:
                problems.append(f"{place}.name: {parsed.name!r} is used twice or is not a valid idShort")
                continue
            names.add(parsed.name)
            signals = parsed.signals if isinstance(parsed, DetectorConfig) else (parsed.signal,)
            if store is not None:
                for signal in signals:
                    reason = _signal_problem(store, signal)
                    if reason is not None:
                        problems.append(f"{place}: {signal.submodel_id} {signal.id_short_path}: {reason}")
            target.append(parsed)  # type: ignore[arg-type]
    if problems:
        raise ConfigurationError("\n".join(problems))
    return detectors, wear


def _id_short(name: str) -> str | None:
    return name if re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,127}", name) else None


def _signal_problem(store: TwinStore, signal: SignalRef) -> str | None:
    try:
        element = store.element(signal.submodel_id, signal.id_short_path)
    except NotFoundError:
        return "no such element"
    if not isinstance(element, model.Property) or not issubclass(element.value_type, _NUMERIC):
        return "not a numeric Property"
    return None


def _property(id_short: str, value_type: Any) -> model.Property:
    return model.Property(
        id_short,
        value_type,
        semantic_id=model.ExternalReference(
            (model.Key(model.KeyTypes.GLOBAL_REFERENCE, _ELEMENT_SEMANTIC_IDS[id_short]),)
        ),
    )


def predictive_submodels(
    store: TwinStore, detectors: Iterable[DetectorConfig], wear: Iterable[RulConfig]
) -> list[tuple[str, model.Submodel]]:
    """``(shell id, PredictiveMaintenance submodel)`` for each shell referencing a watched submodel."""
    users: list[tuple[str, set[str]]] = [(item.name, {s.submodel_id for s in item.signals}) for item in detectors]
    users += [(item.name, {item.signal.submodel_id}) for item in wear]
    wear_names = {item.name for item in wear}
    placed: list[tuple[str, model.Submodel]] = []
    for shell in store.shells():
        referenced = {reference.key[-1].value for reference in shell.submodel if reference.key}
        elements: list[model.SubmodelElement] = []
        for name, submodels in users:
            if not submodels & referenced:
                continue
            if name in wear_names:
                parts = [
                    _property("RemainingUsefulLife", model.datatypes.Double),
                    _property("RemainingUsefulLifeLower", model.datatypes.Double),
                    _property("RemainingUsefulLifeUpper", model.datatypes.Double),
                ]
            else:
                parts = [
                    _property("AnomalyScore", model.datatypes.Double),
                    _property("Anomaly", model.datatypes.Boolean),
                    _property("AnomalyPersistent", model.datatypes.Boolean),
                ]
            parts.append(_property("LastUpdate", model.datatypes.DateTime))
            elements.append(model.SubmodelElementCollection(name, parts))
        if elements:
            submodel = model.Submodel(
                f"{shell.id}/predictive-maintenance",
                id_short="PredictiveMaintenance",
                semantic_id=model.ExternalReference(
                    (model.Key(model.KeyTypes.GLOBAL_REFERENCE, PREDICTIVE_SEMANTIC_ID),)
                ),
                submodel_element=elements,
            )
            placed.append((shell.id, submodel))
    return placed


async def install_submodels(store: TwinStore, placed: Iterable[tuple[str, model.Submodel]]) -> None:
    """Create each submodel in ``store`` (kept when it already has the same elements) and refer to it from its shell."""
    for shell_id, submodel in placed:
        await install_submodel(store, shell_id, submodel, replace_when=_other_elements)


def _other_elements(existing: model.Submodel, new: model.Submodel) -> bool:
    return {element.id_short for element in existing.submodel_element} != {
        element.id_short for element in new.submodel_element
    }


class PredictiveService(BusService):
    """The hub's predictive maintenance (see the module docstring). ``async with`` starts and stops it."""

    def __init__(
        self,
        store: TwinStore,
        detectors: list[DetectorConfig],
        wear: list[RulConfig],
        database: PredictiveDatabase,
        targets: dict[str, list[str]],
    ) -> None:
        self.store = store
        self.detectors = {config.name: AnomalyDetector(config) for config in detectors}
        self.estimators = {config.name: RulEstimator(config) for config in wear}
        self._database = database
        self._targets = targets
        """name -> submodel ids whose collection ``name`` receives the results."""
        self._watch: dict[tuple[str, str], list[str]] = {}
        for config in detectors:
            for signal in config.signals:
                self._watch.setdefault((signal.submodel_id, signal.id_short_path), []).append(config.name)
        for rul in wear:
            self._watch.setdefault((rul.signal.submodel_id, rul.signal.id_short_path), []).append(rul.name)

    async def start(self) -> None:
        kept = await self._database.load()
        for name, detector in list(self.detectors.items()):
            data = kept.get((_DETECTOR, name))
            if data is not None:
                try:
                    self.detectors[name] = detector_from_bytes(data, detector.config)
                except ValueError as error:
                    _LOG.error("detector %s not restored (%s); it learns afresh", name, error)
        for name, estimator in list(self.estimators.items()):
            data = kept.get((_WEAR, name))
            if data is not None:
                try:
                    self.estimators[name] = RulEstimator.restore(estimator.config, orjson.loads(data))
                except (ValueError, KeyError, TypeError) as error:
                    _LOG.error("RUL history of %s not restored (%s); it starts empty", name, error)
        # the kept histories give an estimate at once: the RUL is on the twin before the next sample
        now = utc_now()
        for name, estimator in self.estimators.items():
            try:
                estimate = estimator.estimate(now)
            except ValueError:
                continue
            await self._publish(name, estimate)
        self._subscription = self.store.bus.subscribe("predictive", maxsize=100_000)
        self._tasks = [asyncio.create_task(self._follow(self._subscription), name="predictive")]
        _LOG.info("%d detectors and %d wear signals watch %d elements", len(self.detectors),
                  len(self.estimators), len(self._watch))  # fmt: skip

    async def _follow(self, subscription: Subscription[StoreEvent]) -> None:
        while True:
            events = [await subscription.get()]
            events.extend(subscription.get_nowait_all())
            changed: dict[tuple[str, str], bytes] = {}
            results: dict[str, AnomalyResult | RulEstimate] = {}
            for event in events:
                if not isinstance(event, ValueChanged):
                    continue
                names = self._watch.get((event.submodel_id, event.id_short_path))
                if not names:
                    continue
                good = event.quality is Quality.GOOD
                signal = SignalRef(submodel_id=event.submodel_id, id_short_path=event.id_short_path)
                for name in names:
                    try:
                        result = self._update(name, signal, event.value, event.source_time, good)
                    except Exception:
                        _LOG.exception("predictive %s failed on %s %s", name, event.submodel_id, event.id_short_path)
                        continue
                    changed[(_DETECTOR if name in self.detectors else _WEAR, name)] = self._state(name)
                    if result is not None:
                        results[name] = result
            if changed:
                try:
                    await self._database.save(changed)
                except PersistenceError as error:
                    _LOG.error("predictive states of %s not kept: %s", ", ".join(n for _, n in changed), error)
            for name, result in results.items():
                await self._publish(name, result)

    def _update(
        self, name: str, signal: SignalRef, value: Any, time: datetime, good: bool
    ) -> AnomalyResult | RulEstimate | None:
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        detector = self.detectors.get(name)
        if detector is not None:
            return detector.update(signal, number, time, good)
        return self.estimators[name].update(number, time, good)

    def _state(self, name: str) -> bytes:
        detector = self.detectors.get(name)
        if detector is not None:
            return to_bytes(detector)
        return orjson.dumps(self.estimators[name].state())

    async def _publish(self, name: str, result: AnomalyResult | RulEstimate) -> None:
        if isinstance(result, AnomalyResult):
            values: dict[str, Any] = {
                "AnomalyScore": result.score,
                "Anomaly": result.anomalous,
                "AnomalyPersistent": result.persistent,
            }
        else:
            if result.remaining is None:
                values = {}
            else:
                values = {
                    "RemainingUsefulLife": result.remaining.total_seconds(),
                    "RemainingUsefulLifeLower": result.lower.total_seconds() if result.lower is not None else None,
                    "RemainingUsefulLifeUpper": result.upper.total_seconds() if result.upper is not None else None,
                }
        values["LastUpdate"] = result.time.isoformat()
        for submodel_id in self._targets.get(name, []):
            for element, value in values.items():
                if value is None:
                    continue
                path = f"{name}.{element}"
                try:
                    target = self.store.element(submodel_id, path)
                    assert isinstance(target, model.Property)
                    native = typed_values.coerce(target.value_type, value)
                    now = utc_now()
                    self.store.apply(
                        ValueChanged(
                            submodel_id, path, native, result.time, Quality.GOOD, QualityReason.NONE, now, _ORIGIN
                        )
                    )
                except Exception as error:
                    _LOG.error("predictive result %s.%s not written to %s: %s", name, element, submodel_id, error)


async def start_predictive(stack: AsyncExitStack, settings: HubSettings, store: TwinStore) -> PredictiveService | None:
    """Start the predictive maintenance of ``settings.analytics.predictive`` (stopped when ``stack`` closes).

    ``None`` when nothing is configured. Call it after the model is loaded and values restored.
    """
    section = settings.analytics.predictive
    if not section.detectors and not section.wear:
        return None
    detectors, wear = parse_predictive(settings, store)
    placed = predictive_submodels(store, detectors, wear)
    await install_submodels(store, placed)
    for _, submodel in placed:
        for collection in submodel.submodel_element:
            assert isinstance(collection, model.SubmodelElementCollection)
            for element in collection.value:
                path = f"{collection.id_short}.{element.id_short}"
                if store.binding(submodel.id, path) is None:
                    store.bind(submodel.id, path, ElementBinding(SOURCE, writable=False))
    targets: dict[str, list[str]] = {}
    for _, submodel in placed:
        for element in submodel.submodel_element:
            targets.setdefault(element.id_short, []).append(submodel.id)
    database = await stack.enter_async_context(PredictiveDatabase(settings.predictive_path))
    service = PredictiveService(store, detectors, wear, database, targets)
    return await stack.enter_async_context(service)

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

* per wear signal, a collection ``<name>`` in the structure of IDTA 02048's
  RemainingUsefulLifePrediction (``rul_collection``): the RUL in seconds at
  ``RemainingUsefulLifetime.DurationValue`` (``RUL_PATH``), its time, the time the threshold is
  reached, the interval bounds ``RemainingUsefulLifeLower``/``Upper``, ``MaintenanceRequired``, fixed
  descriptions of the prediction, and ``LastUpdate``; a trend that does not head for the threshold
  leaves the RUL values as they were;
* per detector, a collection ``<name>`` with ``AnomalyScore`` (xs:double), ``Anomaly`` and
  ``AnomalyPersistent`` (xs:boolean) and ``LastUpdate``.

The states of the detectors and estimators that changed are written to ``predictive.sqlite``
(``persistence/predictive.py``) after a batch of changes, at most every ``save_interval`` seconds
(default 5: a detector's pickle costs tens of microseconds, too much for every sample of thousands
of signals), and when the service stops; they are restored at the next start, and a detector whose
configuration changed starts afresh. A crash loses at most the last ``save_interval`` of learning.

Alarms on the results are ordinary monitoring rules on these Properties (a ``state`` rule on
``AnomalyPersistent``, a ``limits`` rule with ``lo`` on ``RemainingUsefulLife``).

Left out: IDTA 02048's ConfidenceInterval Range (two Properties instead), its submodel semanticId
(a shell may hold several predictions and detectors; ``docs/analytics.md`` says why), settings
changed while running.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from contextlib import AsyncExitStack
from datetime import timedelta
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
from aas_server.model import paths
from aas_server.model import values as typed_values
from aas_server.model.events import Quality, QualityReason, ValueChanged, utc_now
from aas_server.model.units import UNITS_BY_CODE
from aas_server.persistence.predictive import PredictiveDatabase
from aas_server.runtime.bus_service import BusService
from aas_server.runtime.submodels import install_submodel
from aas_server.store.bus import Subscription
from aas_server.store.twin_store import ElementBinding, StoreEvent, TwinStore

_LOG = logging.getLogger(__name__)

PREDICTIVE_SEMANTIC_ID = "urn:aas-server:analytics:PredictiveMaintenance:1:0"
"""The semanticId of the hub's PredictiveMaintenance submodels (documented in docs/analytics.md)."""
IDTA_02048 = "https://admin-shell.io/idta/PredictiveMaintenance/"
"""The prefix of IDTA 02048 (Predictive Maintenance 1.0) element semanticIds: ``<prefix><idShort>/1/0``."""
_ELEMENT_SEMANTIC_IDS = {
    "RemainingUsefulLifeLower": "urn:aas-server:analytics:PredictiveMaintenance:1:0:RemainingUsefulLifeLower",
    "RemainingUsefulLifeUpper": "urn:aas-server:analytics:PredictiveMaintenance:1:0:RemainingUsefulLifeUpper",
    "AnomalyScore": "urn:aas-server:analytics:PredictiveMaintenance:1:0:AnomalyScore",
    "Anomaly": "urn:aas-server:analytics:PredictiveMaintenance:1:0:Anomaly",
    "AnomalyPersistent": "urn:aas-server:analytics:PredictiveMaintenance:1:0:AnomalyPersistent",
    "LastUpdate": "urn:aas-server:analytics:PredictiveMaintenance:1:0:LastUpdate",
}
RUL_PATH = "RemainingUsefulLifetime.DurationValue"
"""Where a wear signal's remaining useful life (s) is, below its collection: a rule on ``<name>.`` + this alarms."""
_SECONDS_PATHS = (f".{RUL_PATH}", ".RemainingUsefulLifeLower", ".RemainingUsefulLifeUpper")
"""Results in seconds, shown with their unit on OPC UA (``EngineeringUnits``)."""
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
    # AASd-002: up to 128 characters, a letter first, no hyphen last
    return name if re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9_-]{0,126}[A-Za-z0-9_])?", name) else None


def _signal_problem(store: TwinStore, signal: SignalRef) -> str | None:
    try:
        element = store.element(signal.submodel_id, signal.id_short_path)
    except NotFoundError:
        return "no such element"
    if not isinstance(element, model.Property) or not issubclass(element.value_type, _NUMERIC):
        return "not a numeric Property"
    return None


def _reference(semantic_id: str) -> model.ExternalReference:
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, semantic_id),))


def _property(id_short: str, value_type: Any) -> model.Property:
    return model.Property(id_short, value_type, semantic_id=_reference(_ELEMENT_SEMANTIC_IDS[id_short]))


def _idta(id_short: str, value_type: Any, value: Any = None) -> model.Property:
    """A Property of IDTA 02048 (its idShort and semanticId), with a fixed ``value`` or none (a result)."""
    return model.Property(id_short, value_type, value, semantic_id=_reference(f"{IDTA_02048}{id_short}/1/0"))


def _idta_collection(id_short: str, elements: Iterable[model.SubmodelElement]) -> model.SubmodelElementCollection:
    return model.SubmodelElementCollection(
        id_short, list(elements), semantic_id=_reference(f"{IDTA_02048}{id_short}/1/0")
    )


def _method(config: RulConfig) -> str:
    fit = (
        "an ordinary least-squares line"
        if config.trend == "linear"
        else f"an exponential rise over the baseline {config.baseline:g} (nonlinear least squares)"
    )
    return (
        f"{fit} through the last {config.history} good samples of the wear signal (from {config.min_points}), "
        f"extrapolated to the failure threshold; {config.confidence:.0%} confidence interval by the delta method"
    )


def rul_collection(config: RulConfig, unit: str) -> model.SubmodelElementCollection:
    """One wear signal's remaining useful life, as IDTA 02048's RemainingUsefulLifePrediction.

    ``unit`` is the wear signal's unit symbol ("" when it has none). The results (``DurationValue``
    and ``StartDateTime`` of ``RemainingUsefulLifetime``, ``RemainingUsfulLifeDateTime`` (sic, the
    template's idShort), ``MaintenanceRequired``, the interval bounds, ``LastUpdate``) have no value
    until the first estimate; the other Properties describe the prediction and are fixed.
    """
    signal = config.signal
    direction = "rises to" if config.rising else "falls to"
    lifetime = model.Entity(
        "RemainingUsefulLifetime",
        model.EntityType.CO_MANAGED_ENTITY,
        statement=[
            _idta("IndicationType", model.datatypes.String, "time"),
            _idta("DurationValue", model.datatypes.Double),
            _idta("EngineeringUnit", model.datatypes.String, "s"),
            _idta("StartValue", model.datatypes.Double, 0.0),
            _idta("StartDateTime", model.datatypes.DateTime),
            _idta(
                "Description",
                model.datatypes.String,
                f"seconds from StartDateTime until {signal.id_short_path} {direction} {config.failure_threshold:g}",
            ),
        ],
        semantic_id=_reference(f"{IDTA_02048}RemainingUsefulLifetime/1/0"),
    )
    condition = model.SubmodelElementCollection(
        None,
        [
            _idta("ConditionName", model.datatypes.String, signal.id_short_path),
            _idta("IsBoundaryConditionUsedInModel", model.datatypes.Boolean, True),
            _idta("BoundaryValueRange", model.datatypes.Double, config.failure_threshold),
            _idta("BoundaryEngineeringUnit", model.datatypes.String, unit),
            _idta(
                "BoundaryDescription",
                model.datatypes.String,
                f"the failure threshold of the wear signal {signal.id_short_path} of {signal.submodel_id}",
            ),
        ],
        semantic_id=_reference(f"{IDTA_02048}RULCondition/1/0"),
    )
    conditions = model.SubmodelElementList(
        "ListRULBoundaryConditions",
        model.SubmodelElementCollection,
        [condition],
        semantic_id=_reference(f"{IDTA_02048}ListRULBoundaryConditions/1/0"),
        semantic_id_list_element=_reference(f"{IDTA_02048}RULCondition/1/0"),
    )
    return model.SubmodelElementCollection(
        config.name,
        [
            lifetime,
            _idta("RemainingUsfulLifeDateTime", model.datatypes.DateTime),
            _property("RemainingUsefulLifeLower", model.datatypes.Double),
            _property("RemainingUsefulLifeUpper", model.datatypes.Double),
            conditions,
            _idta_collection(
                "PredictionModelInformation",
                [
                    _idta("ModelType", model.datatypes.String, "data-driven methods"),
                    _idta("ModelDescription", model.datatypes.String, _method(config)),
                ],
            ),
            _idta_collection(
                "AlertAfterExceedingRemainingUsableLife",
                [
                    _idta(
                        "AlertMessage", model.datatypes.String, f"{signal.id_short_path} is past its failure threshold"
                    ),
                    _idta("MaintenanceRequired", model.datatypes.Boolean),
                ],
            ),
            _property("LastUpdate", model.datatypes.DateTime),
        ],
        semantic_id=_reference(f"{IDTA_02048}RemainingUsefulLifePrediction/1/0"),
    )


def _unit_symbol(store: TwinStore, signal: SignalRef) -> str:
    binding = store.binding(signal.submodel_id, signal.id_short_path)
    return binding.unit.symbol if binding is not None and binding.unit is not None else ""


def predictive_submodels(
    store: TwinStore, detectors: Iterable[DetectorConfig], wear: Iterable[RulConfig]
) -> list[tuple[str, model.Submodel]]:
    """``(shell id, PredictiveMaintenance submodel)`` for each shell referencing a watched submodel."""
    users: list[tuple[str, set[str]]] = [(item.name, {s.submodel_id for s in item.signals}) for item in detectors]
    users += [(item.name, {item.signal.submodel_id}) for item in wear]
    wear_configs = {item.name: item for item in wear}
    placed: list[tuple[str, model.Submodel]] = []
    for shell in store.shells():
        referenced = {reference.key[-1].value for reference in shell.submodel if reference.key}
        elements: list[model.SubmodelElement] = []
        for name, submodels in users:
            if not submodels & referenced:
                continue
            config = wear_configs.get(name)
            if config is not None:
                elements.append(rul_collection(config, _unit_symbol(store, config.signal)))
                continue
            parts = [
                _property("AnomalyScore", model.datatypes.Double),
                _property("Anomaly", model.datatypes.Boolean),
                _property("AnomalyPersistent", model.datatypes.Boolean),
                _property("LastUpdate", model.datatypes.DateTime),
            ]
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
    """Whether the stored submodel differs from the configured one: other element paths (other signals, an
    older structure) or other fixed values (a changed failure threshold or trend). Results do not count."""
    kept = dict(paths.walk(existing))
    for path, element in paths.walk(new):
        found = kept.pop(path, None)
        if found is None or type(found) is not type(element):
            return True
        if isinstance(element, model.Property) and element.value is not None:
            assert isinstance(found, model.Property)
            if found.value != element.value:
                return True
    return bool(kept)


class PredictiveService(BusService):
    """The hub's predictive maintenance (see the module docstring). ``async with`` starts and stops it."""

    def __init__(
        self,
        store: TwinStore,
        detectors: list[DetectorConfig],
        wear: list[RulConfig],
        database: PredictiveDatabase,
        targets: dict[str, list[str]],
        *,
        save_interval: float = 5.0,
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
        configs = {config.name: config for config in detectors}
        self._users: dict[tuple[str, str], list[tuple[str, int | None]]] = {
            key: [(name, _position(configs.get(name), key)) for name in names] for key, names in self._watch.items()
        }
        """element -> (detector or wear signal name, the element's position in the detector's group or None)."""
        self._save_interval = save_interval
        self._save_due = 0.0
        self._failing: set[str] = set()
        self._failing_writes: set[tuple[str, str]] = set()
        """Detectors and estimators whose update is failing: their failure was logged once."""
        self._dirty: set[str] = set()
        self._value_types: dict[tuple[str, str], Any] = {}
        self._written: dict[tuple[str, str], Any] = {}
        """The last value written to each result element: an unchanged one is not written again (the store
        would drop it, after coercing it and building its change)."""

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

    async def stop(self) -> None:
        await super().stop()
        if self._dirty:
            await self._save()

    async def _follow(self, subscription: Subscription[StoreEvent]) -> None:
        loop = asyncio.get_running_loop()
        users_of = self._users
        dirty = self._dirty
        while True:
            events = [await subscription.get()]
            events.extend(subscription.get_nowait_all())
            results: dict[str, AnomalyResult | RulEstimate] = {}
            detectors, estimators = self.detectors, self.estimators
            for event in events:
                if not isinstance(event, ValueChanged):
                    continue
                users = users_of.get((event.submodel_id, event.id_short_path))
                if users is None:
                    continue
                good = event.quality is Quality.GOOD
                value = event.value
                number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
                time = event.source_time
                for name, position in users:
                    try:
                        if position is None:
                            result: AnomalyResult | RulEstimate | None = estimators[name].update(number, time, good)
                        else:
                            result = detectors[name].update_at(position, number, time, good)
                    except Exception:
                        if name not in self._failing:  # logged once, and its recovery once
                            self._failing.add(name)
                            _LOG.exception(
                                "predictive %s failed on %s %s; further failures are not logged until it recovers",
                                name,
                                event.submodel_id,
                                event.id_short_path,
                            )
                        continue
                    if name in self._failing:
                        self._failing.discard(name)
                        _LOG.info("predictive %s works again", name)
                    dirty.add(name)
                    if result is not None:
                        results[name] = result
            if dirty and loop.time() >= self._save_due:
                await self._save()
            for name, result in results.items():
                await self._publish(name, result)

    async def _save(self) -> None:
        """Write the states of the detectors and estimators that changed since the last write."""
        names = set(self._dirty)
        self._dirty.clear()
        self._save_due = asyncio.get_running_loop().time() + self._save_interval
        changed = {(_DETECTOR if name in self.detectors else _WEAR, name): self._state(name) for name in names}
        try:
            await self._database.save(changed)
        except PersistenceError as error:
            _LOG.error("predictive states of %s not kept: %s", ", ".join(sorted(names)), error)
        except BaseException:
            self._dirty |= names  # cancelled while writing: written at stop
            raise

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
                    RUL_PATH: result.remaining.total_seconds(),
                    "RemainingUsefulLifetime.StartDateTime": result.time.isoformat(),
                    "RemainingUsfulLifeDateTime": (result.time + result.remaining).isoformat(),
                    "RemainingUsefulLifeLower": result.lower.total_seconds() if result.lower is not None else None,
                    "RemainingUsefulLifeUpper": result.upper.total_seconds() if result.upper is not None else None,
                    "AlertAfterExceedingRemainingUsableLife.MaintenanceRequired": result.remaining <= timedelta(0),
                }
        values["LastUpdate"] = result.time  # an xs:dateTime as it is: no text to write and parse again
        now = utc_now()
        written = self._written
        for submodel_id in self._targets.get(name, []):
            for element, value in values.items():
                if value is None:
                    continue
                path = f"{name}.{element}"
                key = (submodel_id, path)
                if key in written and written[key] == value:
                    continue
                try:
                    value_type = self._value_types.get(key)
                    if value_type is None:
                        target = self.store.element(submodel_id, path)
                        assert isinstance(target, model.Property)
                        value_type = self._value_types[key] = target.value_type
                    native = typed_values.coerce(value_type, value)
                    self.store.apply(
                        ValueChanged(
                            submodel_id, path, native, result.time, Quality.GOOD, QualityReason.NONE, now, _ORIGIN
                        )
                    )
                    written[key] = value
                    if key in self._failing_writes:
                        self._failing_writes.discard(key)
                        _LOG.info("predictive result %s.%s is written to %s again", name, element, submodel_id)
                except Exception as error:
                    if key not in self._failing_writes:  # logged once, and its recovery once
                        self._failing_writes.add(key)
                        _LOG.error("predictive result %s.%s not written to %s: %s", name, element, submodel_id, error)


def _position(config: DetectorConfig | None, key: tuple[str, str]) -> int | None:
    """Where element ``key`` sits in a detector's group of signals; None for a wear signal (no detector)."""
    if config is None:
        return None
    return [(signal.submodel_id, signal.id_short_path) for signal in config.signals].index(key)


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
        for path, element in paths.walk(submodel):
            if isinstance(element, model.Property) and store.binding(submodel.id, path) is None:
                unit = UNITS_BY_CODE["SEC"] if path.endswith(_SECONDS_PATHS) else None
                store.bind(submodel.id, path, ElementBinding(SOURCE, writable=False, unit=unit))
                if element.value is not None:  # a fixed description, not a result: known, so Good
                    now = utc_now()
                    store.apply(ValueChanged(submodel.id, path, element.value, now, server_time=now, origin=_ORIGIN))
    targets: dict[str, list[str]] = {}
    for _, submodel in placed:
        for element in submodel.submodel_element:
            targets.setdefault(element.id_short, []).append(submodel.id)
    database = await stack.enter_async_context(PredictiveDatabase(settings.predictive_path))
    service = PredictiveService(store, detectors, wear, database, targets)
    return await stack.enter_async_context(service)


def check_predictive(settings: HubSettings, identifiables: Iterable[model.Identifiable]) -> list[model.Submodel]:
    """Check ``settings.analytics.predictive`` against a model (``aas-server check``): ``ConfigurationError``
    with the place. Returns the PredictiveMaintenance submodels the hub would add, for checking rules on them."""
    section = settings.analytics.predictive
    if not section.detectors and not section.wear:
        return []
    store = TwinStore()
    store.add_all(list(identifiables))
    detectors, wear = parse_predictive(settings, store)
    return [submodel for _, submodel in predictive_submodels(store, detectors, wear)]

"""Predictive maintenance, the pure core: online anomaly detection and remaining useful life (RUL).

**Anomaly detection** wraps river's streaming detectors (river 0.26, https://riverml.xyz). river was
chosen over scikit-learn because its models learn one sample at a time in constant memory, which is
what a change bus delivers, are maintained (monthly releases), pickle as a whole, and need no
batch refit; scikit-learn's detectors (IsolationForest, LocalOutlierFactor) are batch models. Two
methods, per signal or per group of signals:

* ``standard_score``: river ``StandardAbsoluteDeviation`` per signal, the score |x - mean| / sd of
  the signal's own history; a group scores the largest of its signals. Suits a drifting vibration,
  current or temperature.
* ``half_space_trees``: river ``HalfSpaceTrees`` over the group as one feature vector, its feature
  limits taken from the warm-up samples. Suits a combination of signals that is unusual although
  each alone is not.

Each detector learns from its first ``warm_up`` samples without judging them (the healthy
reference), then scores every sample; with ``adapt`` it keeps learning from the samples it finds
normal (off by default: a slow degradation learnt sample by sample becomes the new normal; measured
in benchmarks/analytics.py, recall 0.3 with it against 1.0 without). An anomaly *persists* after
``persist_samples`` anomalous samples in a row. Bad-quality
and non-finite samples are skipped. ``to_bytes``/``detector_from_bytes`` persist a detector across
restarts; the bytes are a pickle read back through an unpickler that admits river's classes and a
few standard containers only, and they must come from the hub's own database, never from a client.

**RUL** (``RulEstimator``) fits a degradation trend to the last ``history`` good samples of a wear
signal: ``linear`` y = a + b t by ordinary least squares (numpy), or ``exponential``
y - baseline = c + exp(a + b t) by nonlinear least squares (scipy ``curve_fit``, started from the
log-linear fit). The RUL is the time until the fitted trend reaches ``failure_threshold``; its
confidence interval comes from the parameters' covariance by the delta method and Student's t
quantile, clamped at 0. The interval assumes the trend form is right and the noise independent:
it is too narrow early in a degradation (coverage measured in benchmarks/analytics.py).
``naive_rul`` is the baseline: the last value extrapolated along the line through the last two.

Left out: multivariate RUL, change-point detection of the degradation onset, survival models.
"""

from __future__ import annotations

import io
import math
import pickle
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from math import isfinite as _isfinite
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator
from river import anomaly
from scipy import optimize, stats

from aas_server.analytics.states import SignalRef, StrictModel

_FORMAT = b"aas-server-detector:1\n"
HORIZON = timedelta(days=100 * 365)
"""A trend that reaches the threshold later than this is reported as not heading for it (RUL None)."""


class DetectorConfig(StrictModel):
    """An anomaly detector on one signal or a group of signals (vibration, current, temperature)."""

    name: Annotated[str, Field(min_length=1)]
    signals: tuple[SignalRef, ...] = Field(min_length=1)
    method: Literal["standard_score", "half_space_trees"] = "standard_score"
    warm_up: Annotated[int, Field(ge=10)] = 100
    """Samples learnt before any is judged."""
    threshold: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    """Score above which a sample is anomalous; default 4 (standard scores) or 0.9 (half-space trees)."""
    persist_samples: Annotated[int, Field(ge=1)] = 5
    adapt: bool = False
    """Keep learning after the warm-up from the samples found normal. Off by default: the warm-up is
    the healthy reference, and a slow degradation learnt sample by sample would become the new normal."""
    seed: int = 0

    @model_validator(mode="after")
    def _fits_method(self) -> DetectorConfig:
        if len(set(self.signals)) != len(self.signals):
            raise ValueError("a signal is named twice")
        if self.method == "half_space_trees" and self.threshold is not None and self.threshold >= 1:
            raise ValueError(f"half-space tree scores lie in [0, 1]; threshold {self.threshold} is never reached")
        return self

    @property
    def limit(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return 4.0 if self.method == "standard_score" else 0.9


@dataclass(frozen=True, slots=True)
class AnomalyResult:
    name: str
    time: datetime
    score: float
    anomalous: bool
    persistent: bool


_PERSISTED = ("config", "seen", "streak", "_latest", "_scorers", "_trees", "_limits", "_warm_up_rows")
"""The fields a pickled detector holds, in this order (``to_bytes``); the others are caches rebuilt from them."""


@dataclass(slots=True)
class AnomalyDetector:
    """One configured detector and its river model(s); ``update`` takes samples in time order.

    Per sample the detector does no pydantic work: signals are found by their (submodel id, idShort
    path) strings, or by the position ``position(signal)`` gave once (``update_at``). With
    ``standard_score`` and without ``adapt`` the river models stop learning after the warm-up, so
    their mean and standard deviation are read once and kept (``_reference``), and a sample is
    scored with river's own formula on them (``StandardAbsoluteDeviation.score_one``: the same
    floating-point operations, so the same score, without three method calls and a square root per
    sample); any learning step drops the kept values.
    """

    config: DetectorConfig
    seen: int = 0
    streak: int = 0
    _latest: dict[SignalRef, float] = field(default_factory=dict)
    _scorers: dict[SignalRef, Any] = field(default_factory=dict)
    _trees: Any = None
    _limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    _warm_up_rows: list[dict[str, float]] = field(default_factory=list)
    _positions: dict[tuple[str, str], int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _values: list[float | None] = field(default_factory=list, init=False, repr=False, compare=False)
    _missing: int = field(default=0, init=False, repr=False, compare=False)
    _features: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    _scorer_list: list[Any] = field(default_factory=list, init=False, repr=False, compare=False)
    _reference: list[tuple[float, float]] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.config.method == "standard_score" and not self._scorers:
            self._scorers = {signal: anomaly.StandardAbsoluteDeviation() for signal in self.config.signals}
        self._prepare()

    def _prepare(self) -> None:
        signals = self.config.signals
        self._positions = {(signal.submodel_id, signal.id_short_path): index for index, signal in enumerate(signals)}
        self._values = [self._latest.get(signal) for signal in signals]
        self._missing = sum(value is None for value in self._values)
        self._features = tuple(_feature(signal) for signal in signals)
        self._scorer_list = [self._scorers[signal] for signal in signals] if self._scorers else []
        self._reference = None

    def __getstate__(self) -> list[Any]:
        self._latest = {
            signal: value for signal, value in zip(self.config.signals, self._values, strict=True) if value is not None
        }
        return [getattr(self, name) for name in _PERSISTED]

    def __setstate__(self, state: list[Any]) -> None:
        for name, value in zip(_PERSISTED, state, strict=False):
            object.__setattr__(self, name, value)
        self._prepare()

    def position(self, signal: SignalRef) -> int | None:
        """Where ``signal`` sits in this detector's group (for ``update_at``); None if it is not one of them."""
        return self._positions.get((signal.submodel_id, signal.id_short_path))

    def update(self, signal: SignalRef, value: float, time: datetime, good: bool = True) -> AnomalyResult | None:
        """Learn from or judge one sample; None while warming up, for a skipped sample or an incomplete group."""
        position = self._positions.get((signal.submodel_id, signal.id_short_path))
        if position is None:
            return None
        return self.update_at(position, value, time, good)

    def update_at(self, position: int, value: float, time: datetime, good: bool = True) -> AnomalyResult | None:
        """``update`` for the signal at ``position`` (see ``position``)."""
        if not good or (not (value.__class__ is float and _isfinite(value)) and not _finite_number(value)):
            return None
        values = self._values
        if values[position] is None:
            self._missing -= 1
        values[position] = float(value)
        if self._missing:
            return None
        self.seen += 1
        config = self.config
        if self.seen <= config.warm_up:
            self._learn(warming_up=True)
            return None
        score = self._score()
        anomalous = score > config.limit
        self.streak = self.streak + 1 if anomalous else 0
        if config.adapt and not anomalous:
            self._learn(warming_up=False)
        return AnomalyResult(config.name, time, score, anomalous, self.streak >= config.persist_samples)

    def _row(self) -> dict[str, float]:
        return {feature: value for feature, value in zip(self._features, self._values, strict=True)}  # type: ignore[misc]

    def _learn(self, warming_up: bool) -> None:
        if self.config.method == "standard_score":
            self._reference = None
            for scorer, value in zip(self._scorer_list, self._values, strict=True):
                scorer.learn_one(None, value)
            return
        row = self._row()
        if warming_up:
            self._warm_up_rows.append(row)
            if len(self._warm_up_rows) == self.config.warm_up:
                self._build_trees()
            return
        self._trees.learn_one(_scaled(row, self._limits))

    def _score(self) -> float:
        if self.config.method == "standard_score":
            reference = self._reference
            if reference is None:
                reference = self._reference = [
                    (float(scorer.sub_stat.get()), scorer.variance.get() ** 0.5 + 1e-10) for scorer in self._scorer_list
                ]
            values = self._values
            if len(reference) == 1:
                mean, spread = reference[0]
                return abs((values[0] - mean) / spread)  # type: ignore[operator]
            return max(
                abs((value - mean) / spread)  # type: ignore[operator]
                for value, (mean, spread) in zip(values, reference, strict=True)
            )
        return float(self._trees.score_one(_scaled(self._row(), self._limits)))

    def _build_trees(self) -> None:
        limits: dict[str, tuple[float, float]] = {}
        for name in self._warm_up_rows[0]:
            values = [row[name] for row in self._warm_up_rows]
            low, high = min(values), max(values)
            margin = (high - low) or abs(high) or 1.0
            limits[name] = (low - margin, high + margin)
        self._trees = anomaly.HalfSpaceTrees(
            n_trees=25, height=8, window_size=self.config.warm_up // 2, limits={name: (0.0, 1.0) for name in limits},
            seed=self.config.seed,
        )  # fmt: skip
        self._limits = limits
        for row in self._warm_up_rows:
            self._trees.learn_one(_scaled(row, limits))
        self._warm_up_rows = []


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _feature(signal: SignalRef) -> str:
    return f"{signal.submodel_id}#{signal.id_short_path}"


def _scaled(row: dict[str, float], limits: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Features into [0, 1] by the warm-up limits (clamped): half-space trees split that unit range."""
    scaled = {}
    for name, value in row.items():
        low, high = limits[name]
        scaled[name] = min(max((value - low) / (high - low), 0.0), 1.0)
    return scaled


def to_bytes(detector: AnomalyDetector) -> bytes:
    """The detector with its learnt state, for the hub's database."""
    return _FORMAT + pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL)


def detector_from_bytes(data: bytes, config: DetectorConfig) -> AnomalyDetector:
    """A detector persisted by ``to_bytes``; a fresh one when its configuration has changed since.

    Raises ``ValueError`` for bytes of another format, or that name a class outside river and a few
    standard containers (a pickle can call any importable function; this one cannot).
    """
    if not data.startswith(_FORMAT):
        raise ValueError("not a persisted detector (format header missing)")
    try:
        detector = _RestrictedUnpickler(io.BytesIO(data[len(_FORMAT) :])).load()
    except pickle.UnpicklingError as error:
        raise ValueError(f"persisted detector refused: {error}") from error
    if not isinstance(detector, AnomalyDetector):
        raise ValueError(f"persisted detector refused: it holds a {type(detector).__name__}")
    return detector if detector.config == config else AnomalyDetector(config)


_ALLOWED_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "tuple"),
    ("functools", "partial"),
    ("collections", "deque"),
    ("collections", "defaultdict"),
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("random", "Random"),
}
_ALLOWED_MODULE_PREFIXES = ("river.",)
_ALLOWED_OWN = {
    ("aas_server.analytics.predictive", "AnomalyDetector"),
    ("aas_server.analytics.predictive", "DetectorConfig"),
    ("aas_server.analytics.states", "SignalRef"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = (
            (module, name) in _ALLOWED_GLOBALS
            or (module, name) in _ALLOWED_OWN
            or (module.startswith(_ALLOWED_MODULE_PREFIXES) and not name.startswith("_"))
        )
        found = super().find_class(module, name) if allowed else None
        if allowed and (module, name) not in _ALLOWED_GLOBALS | _ALLOWED_OWN:
            # A name in a river module may be something it imported (os, subprocess.run): only river's own classes.
            allowed = isinstance(found, type) and found.__module__.startswith(_ALLOWED_MODULE_PREFIXES)
        if not allowed:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a persisted detector")
        return found


# --- remaining useful life ------------------------------------------------------------------------


class RulConfig(StrictModel):
    """A declared wear signal and the value at which the part is worn out."""

    name: Annotated[str, Field(min_length=1)]
    signal: SignalRef
    failure_threshold: Annotated[float, Field(allow_inf_nan=False)]
    rising: bool = True
    """True when wear drives the value up towards the threshold (vibration), False when down."""
    trend: Literal["linear", "exponential"] = "linear"
    baseline: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    """The healthy level: an exponential trend fits ln(value - baseline) (ln(baseline - value) when falling)."""
    history: Annotated[int, Field(ge=5)] = 200
    """The last samples the trend is fitted to."""
    min_points: Annotated[int, Field(ge=5)] = 10
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.9

    @model_validator(mode="after")
    def _consistent(self) -> RulConfig:
        if self.min_points > self.history:
            raise ValueError(f"min_points ({self.min_points}) exceeds history ({self.history})")
        beyond = self.failure_threshold > self.baseline if self.rising else self.failure_threshold < self.baseline
        if self.trend == "exponential" and not beyond:
            raise ValueError(f"failure_threshold ({self.failure_threshold}) must lie beyond baseline ({self.baseline})")
        return self


@dataclass(frozen=True, slots=True)
class RulEstimate:
    """The RUL at ``time``: None when the trend does not head for the threshold."""

    name: str
    time: datetime
    remaining: timedelta | None
    lower: timedelta | None
    upper: timedelta | None
    """The confidence interval; ``upper`` None when the interval is unbounded."""
    points: int


@dataclass(slots=True)
class RulEstimator:
    """The RUL of one wear signal, re-estimated as samples arrive (``update``) or on demand (``add``, ``estimate``)."""

    config: RulConfig
    _times: deque[float] = field(init=False)
    _values: deque[float] = field(init=False)
    _origin: datetime | None = None

    def __post_init__(self) -> None:
        self._times = deque(maxlen=self.config.history)
        self._values = deque(maxlen=self.config.history)

    def add(self, value: float, time: datetime, good: bool = True) -> bool:
        """Record one sample without estimating; False when it is skipped (bad quality, not finite)."""
        if not good or not _finite_number(value):
            return False
        if self._origin is None:
            self._origin = time
        self._times.append((time - self._origin).total_seconds())
        self._values.append(float(value))
        return True

    def update(self, value: float, time: datetime, good: bool = True) -> RulEstimate | None:
        """Add one sample and re-estimate; None for a skipped sample or before ``min_points``."""
        if not self.add(value, time, good) or len(self._values) < self.config.min_points:
            return None
        return self.estimate(time)

    def estimate(self, now: datetime) -> RulEstimate:
        """The RUL at ``now`` from the recorded history (at least ``min_points`` samples)."""
        if self._origin is None or len(self._values) < self.config.min_points:
            raise ValueError(f"{self.config.name}: {len(self._values)} samples, {self.config.min_points} needed")
        times = np.asarray(self._times)
        values = np.asarray(self._values)
        points = len(times)
        threshold = self.config.failure_threshold
        sign = 1.0 if self.config.rising else -1.0
        if sign * values[-1] >= sign * threshold:
            zero = timedelta(0)
            return RulEstimate(self.config.name, now, zero, zero, zero, points)
        scale = max(float(times[-1] - times[0]), 1.0)
        tau = (times - times[0]) / scale
        if self.config.trend == "linear":
            crossing_tau, spread_tau = _crossing(_line(tau, sign * values), sign * threshold)
        else:
            crossing_tau, spread_tau = _exponential_crossing(tau, self._excess(values), self._excess(threshold))
        elapsed = (now - self._origin).total_seconds()
        crossing, spread = float(times[0]) + crossing_tau * scale, spread_tau * scale
        if not math.isfinite(crossing) or crossing - elapsed > HORIZON.total_seconds():
            return RulEstimate(self.config.name, now, None, None, None, points)
        parameters = 2 if self.config.trend == "linear" else 3
        quantile = float(stats.t.ppf(0.5 + self.config.confidence / 2, points - parameters))
        remaining = max(crossing - elapsed, 0.0)
        lower = min(max(crossing - quantile * spread - elapsed, 0.0), remaining)
        upper_seconds = crossing + quantile * spread - elapsed
        upper = timedelta(seconds=upper_seconds) if upper_seconds <= HORIZON.total_seconds() else None
        return RulEstimate(self.config.name, now, timedelta(seconds=remaining), timedelta(seconds=lower), upper, points)

    def _excess(self, value: Any) -> Any:
        """How far a value (or array) lies beyond the baseline, in the direction of wear."""
        return value - self.config.baseline if self.config.rising else self.config.baseline - value

    def state(self) -> dict[str, Any]:
        """The history, for the hub's database (plain JSON, no pickle)."""
        origin = None if self._origin is None else self._origin.isoformat()
        return {"origin": origin, "times": list(self._times), "values": list(self._values)}

    @classmethod
    def restore(cls, config: RulConfig, state: dict[str, Any]) -> RulEstimator:
        estimator = cls(config)
        if state.get("origin") is not None:
            estimator._origin = datetime.fromisoformat(state["origin"])
            estimator._times.extend(float(item) for item in state["times"])
            estimator._values.extend(float(item) for item in state["values"])
        return estimator


_Fit = tuple[float, float, np.ndarray[Any, Any]] | None
"""Intercept a and slope b of the trend in its linear form, and their covariance."""


def _line(times: np.ndarray[Any, Any], values: np.ndarray[Any, Any]) -> _Fit:
    """Ordinary least squares values = a + b times."""
    design = np.column_stack([np.ones_like(times), times])
    coefficients, _, rank, _ = np.linalg.lstsq(design, values, rcond=None)
    degrees = len(times) - 2
    if rank < 2 or degrees <= 0:
        return None
    residuals = values - design @ coefficients
    covariance = float(residuals @ residuals) / degrees * np.linalg.inv(design.T @ design)
    return float(coefficients[0]), float(coefficients[1]), covariance


def _exponential_crossing(
    times: np.ndarray[Any, Any], excess: np.ndarray[Any, Any], target: float
) -> tuple[float, float]:
    """When excess = c + exp(a + b times), fitted by nonlinear least squares on the raw values, reaches
    ``target``, and that time's standard error (delta method); inf when the fit fails or does not rise.

    The offset c absorbs the level the wear starts from; the fit starts from the line through the
    logarithms of the positive excesses.
    """
    positive = excess > 0
    start = _line(times[positive], np.log(excess[positive])) if int(positive.sum()) >= 3 else None
    if start is None:
        return math.inf, math.inf
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("error", optimize.OptimizeWarning)
            coefficients, covariance = optimize.curve_fit(
                _exp_model, times, excess, p0=(start[0], start[1], 0.0), maxfev=5000
            )
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return math.inf, math.inf
    intercept, slope, offset = (float(item) for item in coefficients)
    if not np.all(np.isfinite(covariance)) or slope <= 0 or target <= offset:
        return math.inf, math.inf
    level = math.log(target - offset)
    gradient = np.array([-1.0 / slope, -(level - intercept) / slope**2, -1.0 / (slope * (target - offset))])
    spread = math.sqrt(max(float(gradient @ covariance @ gradient), 0.0))
    return (level - intercept) / slope, spread


def _exp_model(times: np.ndarray[Any, Any], intercept: float, slope: float, offset: float) -> np.ndarray[Any, Any]:
    result: np.ndarray[Any, Any] = offset + np.exp(intercept + slope * times)
    return result


def _crossing(fit: _Fit, target: float) -> tuple[float, float]:
    """When a + b t reaches ``target`` (inf when it does not rise), and that time's standard error (delta method)."""
    if fit is None or fit[1] <= 0:
        return math.inf, math.inf
    intercept, slope, covariance = fit
    gradient = np.array([-1.0 / slope, -(target - intercept) / slope**2])
    spread = math.sqrt(max(float(gradient @ covariance @ gradient), 0.0))
    return (target - intercept) / slope, spread


def naive_rul(
    times: Sequence[datetime], values: Sequence[float], failure_threshold: float, rising: bool = True
) -> timedelta | None:
    """The baseline: the last value extrapolated along the line through the last two samples."""
    if len(values) < 2:
        return None
    sign = 1.0 if rising else -1.0
    last, previous = sign * values[-1], sign * values[-2]
    threshold = sign * failure_threshold
    if last >= threshold:
        return timedelta(0)
    step = (times[-1] - times[-2]).total_seconds()
    if last <= previous or step <= 0:
        return None
    remaining = timedelta(seconds=(threshold - last) * step / (last - previous))
    return remaining if remaining <= HORIZON else None

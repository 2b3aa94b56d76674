"""Multi-objective search of fusion weights (and optionally alphas) under guardrails.

The search maximises a vector of metrics (e.g. click gauc and dwell ndcg@10) over the
weights of one formula kind, keeps every candidate with its metrics, marks those that break
a constraint as infeasible, and reports the feasible Pareto front (:mod:`fusion.pareto`).
Candidates are scored in batches with :func:`fusion.evaluate.evaluate_many`, which shares
the work of a pass over the logs between all candidates of a batch.

Search space
------------
Scaling every weight leaves every request's order unchanged, so weights live on the simplex
(``sum w = 1``). A point ``u`` of the unit cube ``[0, 1]^(m-1)`` maps to the simplex by
stick-breaking with Beta quantiles (:func:`unit_to_simplex`): a smooth bijection that sends
the uniform distribution to the uniform one on the simplex, so low-discrepancy (Sobol)
points stay evenly spread. Searched alphas take one more unit coordinate each, mapped
log-uniformly into their bounds.

Methods
-------
``"sobol"``
    Scrambled, seeded Sobol points of the unit cube (``scipy.stats.qmc``), in order.
``"random"``
    Seeded uniform points of the unit cube.
``"auto"`` (default)
    Surrogate-assisted batch selection. A Sobol warm start (20% of the budget, at most 10
    points per search dimension + 1, in whole batches). Then, for every further batch, a
    thin-plate-spline RBF model of every metric, fitted to the candidates so far (at most
    500, those nearest the front), predicts a fresh scrambled Sobol pool of 512 points; the
    batch is the pool points predicted feasible that add the most hypervolume to the
    current feasible front, picked one at a time
    (:func:`fusion.pareto.greedy_hypervolume_subset`; reference: the search's reference
    point, or 10% of the front's range below its nadir). Ranking metrics are smooth
    functions of the weights, so a few dozen evaluations model them closely; a small pool
    keeps the picks from chasing the model's own errors. Before any candidate is feasible,
    the pool points predicted to break the constraints least come first.

Every method is deterministic given its seed and the logs, which is what lets a study
(:mod:`fusion.study`) resume a killed search by replaying its stored batches.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.interpolate import RBFInterpolator
from scipy.stats import qmc

from .errors import FusionError, MetricError, SearchError, StudyError
from .evaluate import evaluate, evaluate_many
from .formulas import Formula, alpha_objectives, default_alphas
from .logs import LogSet
from .metrics import parse_metric
from .pareto import (
    MAX_HYPERVOLUME_OBJECTIVES,
    greedy_hypervolume_subset,
    hypervolume,
    pareto_ranks,
    update_front,
)
from .study import (
    HISTORY_ROWS,
    STUDY_FORMAT,
    Batch,
    SearchResult,
    StudyStore,
    build_result,
    resolve_reference,
)

METHODS: tuple[str, ...] = ("auto", "sobol", "random")
DEFAULT_BUDGET = 200
DEFAULT_BATCH_SIZE = 20
# Default alpha range, as multiples of the objective's mean |score| (searched log-uniformly).
DEFAULT_ALPHA_RANGE = (1e-4, 1.0)

Progress = Callable[[int, int, float], Any]

__all__ = [
    "METHODS",
    "Constraint",
    "parse_constraint",
    "search",
    "unit_to_simplex",
]

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_CONSTRAINT = re.compile(
    r"^\s*(?P<objective>[A-Za-z_][A-Za-z0-9_]*)\s*:\s*(?P<metric>[A-Za-z]+(?:@[^\s<>=]*)?)"
    r"\s*(?P<op>>=|<=|==|=|>|<|!=)\s*(?P<rhs>.*?)\s*$"
)
_RELATIVE = (
    re.compile(rf"^(?P<factor>{_NUMBER})\s*\*\s*baseline$"),
    re.compile(rf"^baseline\s*\*\s*(?P<factor>{_NUMBER})$"),
    re.compile(r"^baseline$"),
)
_ABSOLUTE = re.compile(rf"^{_NUMBER}$")


# --- constraints -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Constraint:
    """A guardrail on one metric: ``value op bound``, the bound absolute or relative.

    Attributes
    ----------
    objective, metric : str
        E.g. ``"conversion"``, ``"gauc"`` (canonical metric name).
    op : {">=", "<="}
    bound : float
        The threshold, or the factor of the baseline's value when ``relative``.
    relative : bool
    """

    objective: str
    metric: str
    op: str
    bound: float
    relative: bool

    @property
    def column(self) -> str:
        return f"{self.objective}:{self.metric}"

    def __str__(self) -> str:
        rhs = f"{self.bound!r}*baseline" if self.relative else repr(self.bound)
        return f"{self.column}{self.op}{rhs}"

    def threshold(self, baseline_metrics: Mapping[str, float]) -> float:
        """The bound in metric units (NaN when relative to an undefined baseline value)."""
        return self.bound * float(baseline_metrics[self.column]) if self.relative else self.bound

    def holds(self, values: np.ndarray, baseline_metrics: Mapping[str, float]) -> np.ndarray:
        """Boolean per value; a NaN value (metric undefined) never satisfies a constraint."""
        limit = self.threshold(baseline_metrics)
        with np.errstate(invalid="ignore"):
            return values >= limit if self.op == ">=" else values <= limit


def parse_constraint(text: str, objectives: Sequence[str]) -> Constraint:
    """Parse ``"<objective>:<metric> >= <bound>"`` (or ``<=``) strictly, without eval.

    The bound is a number (``0.31``), a factor of the baseline's value (``0.995*baseline``,
    ``baseline*0.995``) or ``baseline``. Spaces are allowed around the tokens.

    Parameters
    ----------
    text : str
    objectives : sequence of str
        The objectives of the logs.

    Raises
    ------
    SearchError
        Malformed text, an operator other than ``>=``/``<=``, an unknown objective or
        metric, or a non-finite number; the message quotes the constraint.

    Examples
    --------
    >>> str(parse_constraint("conversion:gauc >= 0.995 * baseline", ["click", "conversion"]))
    'conversion:gauc>=0.995*baseline'
    """
    if not isinstance(text, str):
        raise SearchError(f"a constraint must be text such as 'click:gauc>=0.7', got {text!r}")
    match = _CONSTRAINT.match(text)
    if match is None:
        raise SearchError(
            f"malformed constraint {text!r}: use '<objective>:<metric> >= <bound>' or '<=', "
            "the bound a number, '<factor>*baseline' or 'baseline', e.g. "
            "'conversion:gauc>=0.995*baseline'"
        )
    objective, metric_text, op, rhs = match.group("objective", "metric", "op", "rhs")
    if op not in (">=", "<="):
        raise SearchError(f"constraint {text!r}: operator {op!r} is not supported; use >= or <=")
    if objective not in objectives:
        raise SearchError(f"constraint {text!r}: unknown objective {objective!r}; the logs have "
                          f"{list(objectives)}")
    try:
        metric = str(parse_metric(metric_text))
    except MetricError as exc:
        raise SearchError(f"constraint {text!r}: {exc}") from None
    for pattern in _RELATIVE:
        relative = pattern.match(rhs)
        if relative is not None:
            factor = relative.groupdict().get("factor")
            bound, is_relative = (1.0 if factor is None else float(factor)), True
            break
    else:
        if not _ABSOLUTE.match(rhs):
            raise SearchError(
                f"constraint {text!r}: bound {rhs!r} is not a number, '<factor>*baseline' or "
                "'baseline'"
            )
        bound, is_relative = float(rhs), False
    if not math.isfinite(bound):
        raise SearchError(f"constraint {text!r}: bound {rhs!r} is not finite")
    return Constraint(objective, metric, op, bound, is_relative)


def _parse_objectives(objectives: Any, names: Sequence[str]) -> list[tuple[str, str]]:
    if isinstance(objectives, (str, bytes)) or not isinstance(objectives, Sequence) \
            or not objectives:
        raise SearchError(
            "objectives must be a non-empty list of (objective, metric) pairs, e.g. "
            f"[('click', 'gauc'), ('dwell', 'ndcg@10')], got {objectives!r}"
        )
    parsed = []
    for item in objectives:
        if isinstance(item, str) and ":" in item:
            item = tuple(item.split(":", 1))
        if not isinstance(item, (tuple, list)) or len(item) != 2 \
                or not all(isinstance(x, str) for x in item):
            raise SearchError(f"objectives: {item!r} is not an (objective, metric) pair such as "
                              "('click', 'gauc')")
        objective, metric_text = item
        if objective not in names:
            raise SearchError(f"objectives: unknown objective {objective!r}; the logs have "
                              f"{list(names)}")
        try:
            metric = str(parse_metric(metric_text))
        except MetricError as exc:
            raise SearchError(f"objectives: {objective!r}: {exc}") from None
        parsed.append((objective, metric))
    columns = [f"{o}:{m}" for o, m in parsed]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise SearchError(f"objectives: {len(repeated)} repeated, e.g. {repeated[0]!r}")
    if len(parsed) > MAX_HYPERVOLUME_OBJECTIVES:
        raise SearchError(f"objectives: at most {MAX_HYPERVOLUME_OBJECTIVES} metrics can be "
                          f"searched together, got {len(parsed)}")
    return parsed


# --- search space ----------------------------------------------------------------------------
def unit_to_simplex(u: np.ndarray) -> np.ndarray:
    """Map points of the unit cube ``[0, 1]^(m-1)`` to weights on the simplex (``sum w = 1``).

    Stick-breaking with Beta(1, m-1-k) quantiles: ``b_k = 1 - (1 - u_k)^(1/(m-1-k))``,
    ``w_k = b_k * (1 - w_0 - ... - w_(k-1))``, the last weight takes the rest. Uniform
    ``u`` gives uniform weights on the simplex (Dirichlet(1, ..., 1)), and the map is smooth
    and one-to-one, so it keeps the even spread of low-discrepancy points.

    Parameters
    ----------
    u : ndarray, shape (n, m - 1), values in [0, 1]

    Returns
    -------
    ndarray of float64, shape (n, m), rows >= 0 summing to 1 (up to rounding)

    Examples
    --------
    >>> unit_to_simplex(np.array([[0.5]])).tolist()
    [[0.5, 0.5]]
    """
    u = np.asarray(u, dtype=np.float64)
    n, dims = u.shape
    m = dims + 1
    weights = np.empty((n, m))
    remaining = np.ones(n)
    for k in range(dims):
        share = 1.0 - (1.0 - u[:, k]) ** (1.0 / (m - 1 - k))
        weights[:, k] = remaining * share
        remaining = remaining * (1.0 - share)
    weights[:, -1] = remaining
    return weights


@dataclasses.dataclass(frozen=True)
class _Space:
    """Unit-cube coordinates -> (weights, alphas) of candidates, and back to model inputs."""

    n_objectives: int
    alpha_positions: tuple[int, ...]          # objectives (logs order) whose alpha is searched
    alpha_bounds: tuple[tuple[float, float], ...]

    @property
    def dims(self) -> int:
        return self.n_objectives - 1 + len(self.alpha_positions)

    def decode(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        weights = unit_to_simplex(u[:, :self.n_objectives - 1])
        if not self.alpha_positions:
            return weights, None
        alphas = np.full((len(u), self.n_objectives), np.nan)
        for i, (position, (low, high)) in enumerate(zip(self.alpha_positions, self.alpha_bounds)):
            x = u[:, self.n_objectives - 1 + i]
            alphas[:, position] = low * (high / low) ** x if low > 0 else low + (high - low) * x
        return weights, alphas

    def features(self, weights: np.ndarray, alphas: np.ndarray | None) -> np.ndarray:
        """Surrogate inputs: the first m-1 weights (linear simplex coordinates) and each
        searched alpha's position within its bounds (log scale when low > 0)."""
        columns = [weights[:, :self.n_objectives - 1]]
        for position, (low, high) in zip(self.alpha_positions, self.alpha_bounds):
            a = alphas[:, position]
            x = np.log(a / low) / np.log(high / low) if low > 0 else (a - low) / (high - low)
            columns.append(x[:, None])
        return np.hstack(columns)


# --- running batches -------------------------------------------------------------------------
class _Runner:
    """Evaluates batches of unit-cube points on the logs, or replays a study's batches.

    Holds what a method decides from (every candidate's weights, alphas, metrics and
    feasibility) and reports progress after every batch.
    """

    def __init__(self, *, logs: LogSet, kind: str, space: _Space, fixed_alphas: dict[str, float],
                 transforms: dict[str, str] | None, k: float | None, metric_columns: list[str],
                 objective_columns: list[str], constraints: list[Constraint],
                 baseline_metrics: dict[str, float], reference_setting: Any, budget: int,
                 store: StudyStore | None, progress: Progress | None, started: float,
                 max_seconds: float | None) -> None:
        self.logs, self.kind, self.space = logs, kind, space
        self.fixed_alphas, self.transforms, self.k = fixed_alphas, transforms, k
        self.metric_columns, self.objective_columns = metric_columns, objective_columns
        self.searched_at = [metric_columns.index(c) for c in objective_columns]
        self.metric_names = list(dict.fromkeys(c.split(":", 1)[1] for c in metric_columns))
        self.constraints, self.baseline_metrics = constraints, baseline_metrics
        self.reference_setting, self.budget = reference_setting, budget
        self.store, self.progress = store, progress
        self.batches: list[Batch] = []
        self.front = np.empty((0, len(objective_columns)))   # feasible non-dominated metrics
        # Search time runs from the call of search(); a resumed search adds to the stored time.
        self._clock_start = started
        self._max_seconds = max_seconds
        self._last_batch_end = started
        self._slowest_batch = 0.0
        self._hypervolume_seconds = 0.0       # one hypervolume of the current front
        self._clock_offset = 0.0 if store is None else store.last_elapsed()

    @property
    def done(self) -> int:
        return sum(len(b.weights) for b in self.batches)

    @property
    def remaining(self) -> int:
        return self.budget - self.done

    def more(self) -> bool:
        """Whether to start another batch: budget left and, with ``max_seconds``, time for
        it (as slow as the slowest batch of this call) and for assembling the result (one
        more such batch, plus a hypervolume of the front per history row)."""
        if self.remaining <= 0:
            return False
        if self._max_seconds is None:
            return True
        now = time.perf_counter() - self._clock_start
        assembly = self._slowest_batch + min(len(self.batches), HISTORY_ROWS) * \
            self._hypervolume_seconds
        return now + self._slowest_batch + assembly <= self._max_seconds

    def stacked(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(weights, alphas, metrics) of every candidate so far."""
        weights = np.vstack([b.weights for b in self.batches])
        alphas = (None if self.batches[0].alphas is None
                  else np.vstack([b.alphas for b in self.batches]))
        return weights, alphas, np.vstack([b.metrics for b in self.batches])

    def full(self, u: np.ndarray) -> None:
        """Evaluate one batch of unit-cube points (or check and replay the stored batch)."""
        u = u[:self.remaining]
        number = len(self.batches)
        weights, alphas = self.space.decode(u)
        batch = None if self.store is None else self.store.stored(number)
        if batch is not None:
            _check_replay(self.store.path, number, batch, weights, alphas)
        else:
            metrics = self._metrics(weights, alphas)
            batch = Batch(weights, alphas, metrics, self.feasible(metrics),
                          np.full(len(weights), self._elapsed()))
            if self.store is not None:
                self.store.write(number, batch, first_id=self.done)
            end = time.perf_counter()
            self._slowest_batch = max(self._slowest_batch, end - self._last_batch_end)
        self._last_batch_end = time.perf_counter()
        self._append(batch)

    def replay(self) -> bool:
        """Take the next batch from the study if it holds one (adaptive methods skip
        re-deriving what the study already records)."""
        batch = None if self.store is None else self.store.stored(len(self.batches))
        if batch is None:
            return False
        self._append(batch)
        return True

    def feasible(self, metrics: np.ndarray) -> np.ndarray:
        """Every constraint holds and every searched metric is defined, per row."""
        ok = np.all(np.isfinite(metrics[:, self.searched_at]), axis=1)
        for constraint in self.constraints:
            ok &= constraint.holds(metrics[:, self.metric_columns.index(constraint.column)],
                                   self.baseline_metrics)
        return ok

    def violation(self, metrics: np.ndarray) -> np.ndarray:
        """Sum of relative constraint shortfalls per row (0 when feasible, inf when undefined)."""
        total = np.where(np.all(np.isfinite(metrics[:, self.searched_at]), axis=1), 0.0, np.inf)
        for constraint in self.constraints:
            limit = constraint.threshold(self.baseline_metrics)
            values = metrics[:, self.metric_columns.index(constraint.column)]
            gap = limit - values if constraint.op == ">=" else values - limit
            shortfall = np.maximum(gap, 0.0) / max(abs(limit), 1e-12)
            total = total + np.where(np.isfinite(gap), shortfall, np.inf)
        return total

    def _append(self, batch: Batch) -> None:
        self.batches.append(batch)
        new = batch.metrics[batch.feasible][:, self.searched_at]
        kept, added = update_front(self.front, new)
        self.front = np.vstack([self.front[kept], new[added]])
        if self.progress is None and self._max_seconds is None:
            return
        started = time.perf_counter()
        reference, _ = resolve_reference(self.reference_setting, self.objective_columns,
                                         self.baseline_metrics, self.front)
        volume = hypervolume(self.front, reference) if len(self.front) else 0.0
        self._hypervolume_seconds = time.perf_counter() - started
        if self.progress is not None:
            self.progress(self.done, self.budget, volume)

    def _metrics(self, weights: np.ndarray, alphas: np.ndarray | None) -> np.ndarray:
        alpha_arg: Any = self.fixed_alphas or None
        if alphas is not None:
            columns = {f"alpha:{o}": np.full(len(weights), a) for o, a in self.fixed_alphas.items()}
            for position in self.space.alpha_positions:
                columns[f"alpha:{self.logs.objectives[position]}"] = alphas[:, position]
            alpha_arg = pd.DataFrame(columns)
        frame = evaluate_many(self.logs, self.kind, weights=weights, alphas=alpha_arg,
                              transforms=self.transforms, k=self.k, metrics=self.metric_names)
        return frame[self.metric_columns].to_numpy(dtype=np.float64)

    def _elapsed(self) -> float:
        return self._clock_offset + (time.perf_counter() - self._clock_start)


def _check_replay(path: Path, number: int, stored: Batch, weights: np.ndarray,
                  alphas: np.ndarray | None) -> None:
    same_alphas = (stored.alphas is None) == (alphas is None) and (
        alphas is None or np.array_equal(stored.alphas, alphas, equal_nan=True))
    if stored.weights.shape != weights.shape or not np.array_equal(stored.weights, weights) \
            or not same_alphas:
        raise StudyError(
            f"study {str(path)!r}: stored batch {number} holds other candidates than this search "
            "proposes with the same settings (it was written by another version of the search); "
            "use a new study file"
        )


# --- methods ---------------------------------------------------------------------------------
# The default method: candidates predicted by a surrogate are picked for the hypervolume they add.
_POOL_LOG2 = 9                  # fresh Sobol candidates predicted per adaptive batch (log2)
_WARM_SHARE = 0.2               # Sobol warm start: this share of the budget, at most
_WARM_PER_DIM = 10              # this many points per search dimension (+1)
_SURROGATE_ROWS = 500           # cap on the rows a surrogate is fitted to (cubic cost)
_NADIR_MARGIN = 0.1             # selection reference below the nadir, as a share of the range
_SMOOTHING = 1e-6               # RBF smoothing per fitted row, on standardised metrics
_LEADERS_PER_PICK = 4           # greedy hypervolume picks among this many candidates per pick
_LEADERS_MIN = 64               # (at least this many), those sticking out of the front most


def _sobol_points(dims: int, n: int, seed: Any) -> np.ndarray:
    sampler = qmc.Sobol(d=dims, scramble=True, seed=seed)
    # Draw a power of two (Sobol's balance properties) and keep the first n.
    return sampler.random_base2(max(0, math.ceil(math.log2(max(n, 1)))))[:n]


def _run_sobol(runner: _Runner, seed: int, batch_size: int) -> None:
    points = _sobol_points(runner.space.dims, runner.budget, np.random.default_rng([seed, 1]))
    for start in range(0, runner.budget, batch_size):
        if not runner.more():
            return
        runner.full(points[start:start + batch_size])


def _run_random(runner: _Runner, seed: int, batch_size: int) -> None:
    rng = np.random.default_rng([seed, 2])
    while runner.more():
        runner.full(rng.random((min(batch_size, runner.remaining), runner.space.dims)))


def _run_auto(runner: _Runner, seed: int, batch_size: int) -> None:
    dims = runner.space.dims
    # The warm start fills whole batches.
    wanted = min(_WARM_SHARE * runner.budget, _WARM_PER_DIM * (dims + 1))
    warm = min(runner.budget, batch_size * math.ceil(wanted / batch_size))
    points = _sobol_points(dims, warm, np.random.default_rng([seed, 1]))
    for start in range(0, warm, batch_size):
        if not runner.more():
            return
        runner.full(points[start:start + batch_size])
    while runner.more():
        if runner.replay():
            continue
        # A fresh scrambled pool per batch number: the same batch always sees the same pool.
        pool = _sobol_points(runner.space.dims, 1 << _POOL_LOG2,
                             np.random.default_rng([seed, 3, len(runner.batches)]))
        runner.full(pool[_pick(runner, pool, min(batch_size, runner.remaining))])


def _pick(runner: _Runner, pool: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``pool`` to evaluate next: the predicted feasible points that add the most
    hypervolume to the current front, then the ones sticking out of it the most, then
    Sobol order."""
    space = runner.space
    weights, alphas, metrics = runner.stacked()
    predicted = _predict(space.features(weights, alphas), metrics,
                         space.features(*space.decode(pool)), runner.searched_at)
    if predicted is None:
        return np.arange(k)
    searched = predicted[:, runner.searched_at]
    front = runner.front
    if len(front) == 0:
        return np.argsort(runner.violation(predicted), kind="stable")[:k]
    reference, source = resolve_reference(runner.reference_setting, runner.objective_columns,
                                          runner.baseline_metrics, front)
    spread = front.max(axis=0) - front.min(axis=0)
    if source == "nadir":
        reference = reference - _NADIR_MARGIN * spread
    stickout = _stickout(searched, front, np.where(spread > 0, spread, 1.0))
    candidates = np.flatnonzero(runner.feasible(predicted) & (stickout > 0))
    order = candidates[np.argsort(-stickout[candidates], kind="stable")]
    leaders = order[:max(_LEADERS_PER_PICK * k, _LEADERS_MIN)]
    chosen = [int(leaders[i]) for i in greedy_hypervolume_subset(searched[leaders], reference, k,
                                                                 base=front)]
    for row in np.concatenate([order, np.arange(len(pool))]):
        if len(chosen) == k:
            break
        if int(row) not in chosen:
            chosen.append(int(row))
    return np.array(chosen, dtype=np.int64)


def _predict(features: np.ndarray, metrics: np.ndarray, queries: np.ndarray,
             searched_at: list[int]) -> np.ndarray | None:
    """Thin-plate-spline RBF prediction of every metric at ``queries`` (None if too few rows)."""
    usable = np.flatnonzero(np.all(np.isfinite(metrics), axis=1))
    if len(usable) < features.shape[1] + 2:
        return None
    if len(usable) > _SURROGATE_ROWS:
        # The rows nearest the front decide where it goes next (ties: latest first).
        ranks = pareto_ranks(metrics[usable][:, searched_at])
        usable = np.sort(usable[np.lexsort((-usable, ranks))[:_SURROGATE_ROWS]])
    y = metrics[usable]
    centre, scale = y.mean(axis=0), y.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    try:
        model = RBFInterpolator(features[usable], (y - centre) / scale, kernel="thin_plate_spline",
                                smoothing=_SMOOTHING * len(usable))
        return model(queries) * scale + centre
    except (np.linalg.LinAlgError, ValueError):
        return None


def _stickout(points: np.ndarray, front: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """How far each point sticks out of the front: ``min_s max_k (x_k - s_k) / scale_k``
    (> 0 iff no front point weakly dominates it)."""
    out = np.full(len(points), np.inf)
    for start in range(0, len(front), 64):
        gaps = (points[:, None, :] - front[None, start:start + 64, :]) / scale
        out = np.minimum(out, gaps.max(axis=2).min(axis=1))
    return out


_METHOD_RUNNERS = {"auto": _run_auto, "sobol": _run_sobol, "random": _run_random}


# --- settings ----------------------------------------------------------------------------
def _resolve_baseline(baseline: Any, kind: str, logs: LogSet, alphas: dict[str, float],
                      transforms: dict[str, str] | None, k: float | None) -> tuple[Formula, str]:
    if baseline is None:
        equal = {o: 1.0 / len(logs.objectives) for o in logs.objectives}
        return Formula.of(kind, equal, alphas=alphas or None, transforms=transforms,
                          k=k), "equal weights (default)"
    if isinstance(baseline, Formula):
        return baseline, "formula"
    formula = getattr(baseline, "formula", None)
    if isinstance(formula, Formula):
        return formula, f"config {getattr(baseline, 'name', '')!r}".rstrip()
    raise SearchError(f"baseline must be a Formula or a FusionConfig, got "
                      f"{type(baseline).__name__}")


def _alpha_bounds(search_alphas: bool, bounds: Any, kind: str, logs: LogSet,
                  transforms: dict[str, str] | None) -> dict[str, tuple[float, float]]:
    takes = alpha_objectives(kind, logs.objectives, transforms)
    if not search_alphas:
        if bounds is not None:
            raise SearchError("bounds are alpha ranges and need search_alphas=True")
        return {}
    if not takes:
        raise SearchError(f"search_alphas: a {kind!r} formula has no alpha to search"
                          + (" (give some objective the 'log' transform)" if kind == "sum" else ""))
    if bounds is None:
        resolved = {}
        for name in takes:
            scores = logs.scores[:, logs.objective_index(name)].astype(np.float64)
            shift = max(0.0, -float(scores.min()))
            scale = float(np.abs(scores).mean()) or 1.0
            low, high = DEFAULT_ALPHA_RANGE
            resolved[name] = (shift + low * scale, shift + high * scale)
        return resolved
    if not isinstance(bounds, Mapping) or not bounds:
        raise SearchError(f"bounds must map objective names to (low, high) alpha ranges, "
                          f"got {bounds!r}")
    resolved = {}
    for name, pair in bounds.items():
        if name not in takes:
            raise SearchError(f"bounds: {name!r} takes no alpha in a {kind!r} formula; objectives "
                              f"with an alpha: {takes}")
        try:
            low, high = (float(x) for x in pair)
        except (TypeError, ValueError):
            raise SearchError(f"bounds: {name!r} must be (low, high) numbers, "
                              f"got {pair!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise SearchError(f"bounds: {name!r} must have finite low < high, got {pair!r}")
        minimum = float(logs.scores[:, logs.objective_index(name)].min())
        if minimum + low <= 0:
            raise SearchError(
                f"bounds: {name!r} low alpha {low!r} makes log(score + alpha) undefined: the "
                f"smallest score is {minimum!r}; use low > {-minimum!r}"
            )
        resolved[name] = (low, high)
    return {name: resolved[name] for name in takes if name in resolved}


def _preference(preference: Any, objective_columns: list[str]) -> dict[str, float] | None:
    if preference is None:
        return None
    if isinstance(preference, Mapping):
        values = {}
        for key, weight in preference.items():
            matches = [c for c in objective_columns if c == key or c.split(":", 1)[0] == key]
            if len(matches) != 1:
                raise SearchError(f"preference: {key!r} names {len(matches)} searched metric(s); "
                                  f"use one of {objective_columns}")
            values[matches[0]] = float(weight)
        given = [values.get(c, 0.0) for c in objective_columns]
    else:
        given = [float(x) for x in preference]
        if len(given) != len(objective_columns):
            raise SearchError(f"preference: {len(given)} weight(s) for {len(objective_columns)} "
                              f"searched metrics {objective_columns}")
    if any(not math.isfinite(w) or w < 0 for w in given) or not any(w > 0 for w in given):
        raise SearchError(f"preference weights must be finite, >= 0 and not all 0, got {given}")
    return dict(zip(objective_columns, given))


def _reference_setting(reference_point: Any, objective_columns: list[str]) -> Any:
    if reference_point is None or reference_point in ("baseline", "nadir"):
        return reference_point
    if isinstance(reference_point, Mapping):
        missing = [c for c in objective_columns if c not in reference_point]
        extra = [c for c in reference_point if c not in objective_columns]
        if missing or extra:
            raise SearchError(f"reference_point must give exactly the searched metrics "
                              f"{objective_columns}; missing {missing}, unknown {extra}")
        values = [reference_point[c] for c in objective_columns]
    elif isinstance(reference_point, str):
        raise SearchError(f"reference_point {reference_point!r} is not 'baseline', 'nadir', a "
                          "mapping or a sequence of numbers")
    else:
        values = list(reference_point)
        if len(values) != len(objective_columns):
            raise SearchError(f"reference_point: {len(values)} value(s) for "
                              f"{len(objective_columns)} searched metrics")
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise SearchError(f"reference_point values must be numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in numbers):
        raise SearchError(f"reference_point values must be finite, got {numbers}")
    return dict(zip(objective_columns, numbers))


def _whole(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SearchError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


# --- the entry point -------------------------------------------------------------------------
def search(
    logs: LogSet,
    kind: str = "product",
    objectives: Sequence[tuple[str, str]] = (),
    constraints: Sequence[str] = (),
    bounds: Mapping[str, tuple[float, float]] | None = None,
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
    method: str = "auto",
    progress: Progress | None = None,
    study: str | Path | None = None,
    baseline: Any = None,
    search_alphas: bool = False,
    preference: Mapping[str, float] | Sequence[float] | None = None,
    reference_point: Any = None,
    *,
    alphas: Mapping[str, float] | None = None,
    transforms: Mapping[str, str] | None = None,
    k: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_seconds: float | None = None,
) -> SearchResult:
    """Search formula weights for the Pareto front of several metrics, under constraints.

    Parameters
    ----------
    logs : LogSet
    kind : {"sum", "product", "rank"}
    objectives : sequence of (objective, metric)
        The metrics to maximise together (1 to 6), e.g. ``[("click", "gauc"),
        ("dwell", "ndcg@10")]``; ``"click:gauc"`` strings are accepted too.
    constraints : sequence of str
        Guardrails such as ``"conversion:gauc>=0.995*baseline"`` or ``"click:ndcg@10>=0.31"``
        (:func:`parse_constraint`). A candidate breaking one is kept and marked infeasible.
    bounds : mapping objective -> (low, high), optional
        Alpha ranges, with ``search_alphas=True`` only (searched log-uniformly when low > 0).
        Default: every objective that takes an alpha, from ``1e-4`` to ``1`` times its mean
        absolute score (shifted up when scores can be negative).
    budget : int
        Candidates evaluated on the full logs.
    seed : int
        Same seed and same logs give identical candidates.
    method : {"auto", "sobol", "random"}
        See the module notes: ``"auto"`` (default) models the metrics from the candidates
        so far and picks each batch for the hypervolume it is predicted to add.
    progress : callable, optional
        ``progress(done, total, hypervolume)`` after every finished batch; the hypervolume
        is against the reference point as resolved so far (with the default setting it
        switches from the nadir to the baseline once the front beats the baseline).
    study : path, optional
        A DuckDB file that records the search batch by batch; an existing study for the
        same logs and settings is resumed (see :mod:`fusion.study`).
    baseline : Formula or FusionConfig, optional
        The production formula: relative constraints and the default reference point use
        its metrics. Default: equal weights of the same kind, with ``alphas``, ``transforms``
        and ``k`` (a searched alpha that is not fixed takes the geometric midpoint of its
        bounds).
    search_alphas : bool
        Also search alphas (``product``, or ``sum`` objectives with the ``log`` transform).
    preference : mapping or sequence, optional
        Importance of each searched metric (keys: metric column or objective name);
        ``result.preferred_id`` is the front point closest to it.
    reference_point : None, "baseline", "nadir", mapping or sequence
        Hypervolume reference. None: the baseline's metrics if some feasible front point
        beats the baseline in every searched metric, else the nadir (per-metric worst) of the
        feasible front.
    alphas : mapping, optional
        Fixed alphas (every candidate and the default baseline); searched ones override.
        An objective given none takes :func:`fusion.formulas.default_alphas` (0 where every
        score is > 0, else just enough to make the log defined).
    transforms : mapping, optional
        ``sum`` only: per-objective transforms, fixed.
    k : float, optional
        ``rank`` only: the offset, fixed.
    batch_size : int
        Candidates per batch (a batch is the unit of progress and of saving).
    max_seconds : float, optional
        Also stop early enough to return within this many seconds of the call: a batch
        starts only if two batches as slow as this call's slowest so far still fit (one for
        the batch, one for assembling the result). ``result.complete`` is then False, and
        the candidates are the first ones of the same search without a time limit.

    Returns
    -------
    SearchResult

    Raises
    ------
    SearchError
        Malformed objectives, constraints, bounds, budget, method, preference or reference.
    StudyError
        ``study`` belongs to other logs or other settings (the message names the difference).
    FormulaError
        The formula kind cannot be evaluated on these logs (e.g. log of a zero score: set
        ``alphas``).

    Notes
    -----
    Weights are always searched over every objective of the logs, on the simplex. Every
    candidate is evaluated on all the logs; the budget counts candidates.
    """
    started = time.perf_counter()
    if not isinstance(logs, LogSet):
        raise SearchError(f"logs must be a LogSet (fusion.load_logs), got {type(logs).__name__}")
    if method not in METHODS:
        raise SearchError(f"method {method!r} is not one of {list(METHODS)}")
    budget = _whole("budget", budget, 1)
    seed = _whole("seed", seed, 0)
    batch_size = _whole("batch_size", batch_size, 1)
    if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(
            max_seconds, (int, float)) or not max_seconds > 0):
        raise SearchError(f"max_seconds must be a number of seconds > 0, got {max_seconds!r}")
    names = list(logs.objectives)
    searched = _parse_objectives(objectives, names)
    objective_columns = [f"{o}:{m}" for o, m in searched]
    if isinstance(constraints, str):
        constraints = [constraints]
    parsed = [parse_constraint(text, names) for text in constraints]
    metric_columns = list(dict.fromkeys(objective_columns + [c.column for c in parsed]))
    transforms = dict(transforms) if transforms else None
    alpha_bounds = _alpha_bounds(bool(search_alphas), bounds, kind, logs, transforms)
    # An alpha neither given nor searched takes its default for these logs.
    fixed_alphas = {o: a for o, a in default_alphas(logs, kind, transforms).items()
                    if o not in alpha_bounds}
    fixed_alphas.update({str(o): float(a) for o, a in (alphas or {}).items()})
    if len(names) == 1 and not alpha_bounds:
        raise SearchError(f"the logs have one objective ({names[0]!r}): its weight is always 1, "
                          "there is nothing to search (search_alphas=True searches its alpha)")
    preference = _preference(preference, objective_columns)
    reference_point = _reference_setting(reference_point, objective_columns)
    try:
        # Every objective may get weight: its feature must be defined on every row.
        Formula.of(kind, {o: 1.0 for o in names}, alphas={**fixed_alphas, **{
            o: low for o, (low, _) in alpha_bounds.items()}} or None,
            transforms=transforms, k=k).validate_for(logs)
    except FusionError as exc:
        raise type(exc)(f"search: {exc}") from None
    # The default baseline takes a searched alpha's geometric midpoint unless one is fixed.
    middle = {o: math.sqrt(low * high) if low > 0 else (low + high) / 2
              for o, (low, high) in alpha_bounds.items()}
    base_formula, base_source = _resolve_baseline(baseline, kind, logs, {**middle, **fixed_alphas},
                                                  transforms, k)
    needs_baseline_metric = sorted({c.split(":", 1)[1] for c in metric_columns})
    base_eval = evaluate(logs, base_formula, metrics=needs_baseline_metric)
    baseline_metrics = {c: float(base_eval[tuple(c.split(":", 1))]) for c in metric_columns}
    undefined = [c.column for c in parsed
                 if c.relative and not math.isfinite(baseline_metrics[c.column])]
    if undefined:
        raise SearchError(f"constraint on {undefined[0]!r} is relative to the baseline, whose "
                          "value is undefined (NaN: no usable group); use an absolute bound")
    undefined = [c for c in objective_columns if not math.isfinite(baseline_metrics[c])]
    if reference_point == "baseline" and undefined:
        raise SearchError(f"reference_point='baseline': the baseline's {undefined[0]!r} is "
                          "undefined (NaN: no usable group); give the reference point")

    settings = {
        "kind": kind, "objectives": [list(p) for p in searched],
        "constraints": [str(c) for c in parsed], "budget": budget, "seed": seed,
        "method": method, "batch_size": batch_size, "search_alphas": bool(search_alphas),
        "alpha_objectives": list(alpha_bounds),
        "bounds": {o: list(b) for o, b in alpha_bounds.items()},
        "alphas": fixed_alphas, "transforms": transforms, "k": None if k is None else float(k),
        "preference": preference, "reference_point": reference_point,
    }
    from . import __version__  # NOTE: lazily, fusion/__init__ imports this module first

    meta = {
        "format": STUDY_FORMAT, "fingerprint": logs.fingerprint, "schema": logs.schema.to_dict(),
        "objectives": names, "settings": settings, "metric_columns": metric_columns,
        "baseline": {"formula": base_formula.to_dict(), "source": base_source,
                     "metrics": baseline_metrics},
        "tool_version": __version__,
    }
    space = _Space(len(names), tuple(names.index(o) for o in alpha_bounds),
                   tuple(alpha_bounds.values()))
    store = None if study is None else StudyStore.open(study, meta)
    try:
        if store is not None:
            meta = store.meta
        runner = _Runner(
            logs=logs, kind=kind, space=space, fixed_alphas=fixed_alphas, transforms=transforms,
            k=k, metric_columns=metric_columns, objective_columns=objective_columns,
            constraints=parsed, baseline_metrics=baseline_metrics,
            reference_setting=reference_point, budget=budget, store=store,
            progress=progress, started=started, max_seconds=max_seconds)
        _METHOD_RUNNERS[method](runner, seed, batch_size)
    finally:
        if store is not None:
            store.close()
    return build_result(meta, runner.batches)

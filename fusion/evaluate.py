"""Evaluate fusion formulas on logs: per-objective ranking metrics of the fused ranking.

:func:`evaluate` scores one formula (optionally against a baseline, with bootstrap
confidence intervals); :func:`evaluate_many` scores many weight vectors of one kind at once.

How the work is shared and bounded:

- Rows are processed in chunks of whole groups (about ``chunk_rows`` rows): per chunk the
  feature matrix ``X`` (rows x objectives) is computed once per formula template, and one
  call of the metric kernel (:func:`fusion.metrics.combined_metric_sums`) scores every
  candidate, fusing ``X @ w`` group by group in its own scratch: no (candidates x rows)
  matrix is built. Chunk sums add up (:class:`MetricSums`).
- Candidates are processed in batches of at most
  :func:`fusion.metrics.candidates_per_call`, whose chunk layout (hence every bit) does not
  depend on the number of candidates, so a formula evaluated alone and inside
  :func:`evaluate_many` gives the same bits.
- ``group_by="user"``: rows are visited in user order (requests of one user together), so
  chunks hold whole users *and* whole requests; the permutation is computed once per LogSet
  and cached.
- The global ``auc`` needs every row's fused score at once (8 bytes per row and candidate,
  batches kept under ``FUSED_BUDGET_BYTES``) and one sort of all rows per objective.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numba
import numpy as np
import pandas as pd

from .errors import FormulaError, FusionError, InvalidValueError
from .formulas import KINDS, Formula, combine, group_chunks
from .logs import LogSet
from .metrics import (
    MetricSpec,
    MetricSums,
    candidates_per_call,
    combined_metric_sums,
    global_auc,
    label_rules,
    parse_metric,
    parse_metrics,
)

__all__ = ["DEFAULT_METRICS", "GROUP_BY", "EvaluationResult", "evaluate", "evaluate_many"]

DEFAULT_METRICS: tuple[str, ...] = ("gauc", "ndcg@10", "top@10")
GROUP_BY: tuple[str, ...] = ("request", "user")
CHUNK_ROWS = 262_144
FUSED_BUDGET_BYTES = 256 << 20
# NOTE: the metric kernel returns sums over all groups of a call, and each call has a fixed
# cost, so the bootstrap resamples random blocks of whole groups (one call each); 256 blocks
# estimate the standard error to about 1 / sqrt(2 * 255) = 4.4 % (exact group resampling
# when there are at most 256 groups).
BOOTSTRAP_BLOCKS = 256
# Blocks smaller than this are scored single-threaded (see _serial_kernel).
SERIAL_BLOCK_ROWS = 65_536


# --- row layouts -----------------------------------------------------------------------------
def _take_ranges(offsets: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ranges ``offsets[i]:offsets[i + 1]``, ``i`` in ``order``, and new offsets."""
    starts = offsets[order]
    sizes = offsets[order + 1] - starts
    new_offsets = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(sizes, out=new_offsets[1:])
    indices = np.repeat(starts - new_offsets[:-1], sizes)
    indices += np.arange(new_offsets[-1], dtype=np.int64)
    return indices, new_offsets


@dataclasses.dataclass(frozen=True)
class _Layout:
    """An order of the rows in which each metric group and each request is contiguous.

    rows : row permutation of the LogSet (None: the LogSet's own order)
    request_offsets : request boundaries in this order
    group_offsets : metric group (request or user) boundaries in this order
    group_requests : for each metric group, its range of requests (in this order)
    """

    rows: np.ndarray | None
    request_offsets: np.ndarray
    group_offsets: np.ndarray
    group_requests: np.ndarray

    @property
    def n_groups(self) -> int:
        return int(self.group_offsets.shape[0] - 1)

    def take(self, matrix: np.ndarray, start: int, stop: int) -> np.ndarray:
        return matrix[start:stop] if self.rows is None else matrix[self.rows[start:stop]]

    def chunks(self, first_group: int, last_group: int, max_rows: int
               ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """(row start, row stop, local request offsets, local group offsets) of whole groups."""
        for start, stop, groups in group_chunks(self.group_offsets[first_group:last_group + 1],
                                                max_rows):
            a, b = np.searchsorted(self.request_offsets, [start, stop])
            yield start, stop, self.request_offsets[a:b + 1] - start, groups

    def shuffled(self, rng: np.random.Generator) -> _Layout:
        """The same groups in a random order (requests stay inside their group)."""
        order = rng.permutation(self.n_groups)
        positions, group_offsets = _take_ranges(self.group_offsets, order)
        requests, group_requests = _take_ranges(self.group_requests, order)
        request_offsets = np.zeros(len(requests) + 1, dtype=np.int64)
        np.cumsum(np.diff(self.request_offsets)[requests], out=request_offsets[1:])
        rows = positions if self.rows is None else self.rows[positions]
        return _Layout(rows, request_offsets, group_offsets, group_requests)


_USER_LAYOUTS: weakref.WeakKeyDictionary[LogSet, _Layout] = weakref.WeakKeyDictionary()


def _layout(logs: LogSet, group_by: str) -> _Layout:
    if group_by == "request":
        requests = np.arange(logs.n_requests + 1, dtype=np.int64)
        return _Layout(None, logs.group_offsets, logs.group_offsets, requests)
    cached = _USER_LAYOUTS.get(logs)
    if cached is None:
        cached = _USER_LAYOUTS[logs] = _user_layout(logs)
    return cached


def _user_layout(logs: LogSet) -> _Layout:
    codes = np.asarray(logs.users.codes)
    starts = logs.group_offsets[:-1]
    user = codes[starts]
    user_column = logs.schema.user_column
    missing = np.flatnonzero(np.minimum.reduceat(codes, starts) < 0)
    if missing.size:
        raise InvalidValueError(
            f"group_by='user': column {user_column!r} is missing in {missing.size} request(s), "
            f"e.g. request {logs.request_id(missing[0])!r}"
        )
    mixed = np.flatnonzero(np.maximum.reduceat(codes, starts) != np.minimum.reduceat(codes, starts))
    if mixed.size:
        raise InvalidValueError(
            f"group_by='user': {mixed.size} request(s) hold rows of several users "
            f"(column {user_column!r}), e.g. request {logs.request_id(mixed[0])!r}; "
            "grouping by user needs each request to belong to one user"
        )
    order = np.argsort(user, kind="stable")
    rows, request_offsets = _take_ranges(logs.group_offsets, order)
    sorted_users = user[order]
    new_user = np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1
    group_requests = np.concatenate(([0], new_user, [len(order)])).astype(np.int64)
    return _Layout(rows, request_offsets, request_offsets[group_requests], group_requests)


# --- candidates ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Template:
    """Candidates that share features: ``formula`` computes them, ``weights`` (n, m) mix them."""

    formula: Formula
    weights: np.ndarray
    positions: np.ndarray  # which candidates (rows of the result) these are


def _candidate_weights(templates: Sequence[_Template], n_candidates: int, m: int) -> np.ndarray:
    """Weights (candidates, templates x m) over the features of every template side by side:
    a candidate weighs its own template's block and nothing else."""
    weights = np.zeros((n_candidates, len(templates) * m))
    for t, template in enumerate(templates):
        weights[template.positions, t * m:(t + 1) * m] = template.weights
    return weights


def _chunk_features(templates: Sequence[_Template], scores: np.ndarray,
                    request_offsets: np.ndarray, objectives: Sequence[str]) -> np.ndarray:
    parts = [t.formula.features(scores, request_offsets, objectives) for t in templates]
    return parts[0] if len(parts) == 1 else np.hstack(parts)


@dataclasses.dataclass(frozen=True)
class _Scored:
    values: np.ndarray          # (candidates, objectives, specs)
    groups_used: np.ndarray     # (objectives, specs)
    groups_skipped: np.ndarray  # (objectives, specs)


def _sweep(logs: LogSet, layout: _Layout, templates: Sequence[_Template], n_candidates: int,
           grouped: tuple[MetricSpec, ...], chunk_rows: int, blocks: Sequence[tuple[int, int]],
           fused_out: np.ndarray | None = None) -> list[MetricSums | None]:
    """Metric sums of every block of groups (None when no grouped metric is asked)."""
    thresholds, log1p_gain = label_rules(logs.schema.objectives)
    weights = _candidate_weights(templates, n_candidates, len(logs.objectives))
    out = []
    for first, last in blocks:
        total = None
        for start, stop, request_offsets, group_offsets in layout.chunks(first, last, chunk_rows):
            features = _chunk_features(templates, layout.take(logs.scores, start, stop),
                                       request_offsets, logs.objectives)
            if fused_out is not None:
                combine(features, weights, out=fused_out[:, start:stop])
            if grouped:
                # The kernel fuses each group's scores itself: no (candidates, rows) matrix.
                sums = combined_metric_sums(
                    features, weights, layout.take(logs.labels, start, stop), group_offsets,
                    specs=grouped, positive_thresholds=thresholds, log1p_gain=log1p_gain)
                total = sums if total is None else total + sums
        out.append(total)
    return out


def _score(logs: LogSet, layout: _Layout, templates: Sequence[_Template], n_candidates: int,
           specs: tuple[MetricSpec, ...], chunk_rows: int) -> _Scored:
    """Every metric of every candidate on all groups."""
    grouped = tuple(s for s in specs if s.grouped)
    wants_auc = any(not s.grouped for s in specs)
    fused_all = np.empty((n_candidates, logs.n_rows)) if wants_auc else None
    (sums,) = _sweep(logs, layout, templates, n_candidates, grouped, chunk_rows,
                     [(0, layout.n_groups)], fused_all)
    m = len(logs.objectives)
    values = np.full((n_candidates, m, len(specs)), np.nan)
    used = np.zeros((m, len(specs)), dtype=np.int64)
    skipped = np.zeros((m, len(specs)), dtype=np.int64)
    grouped_at = [s for s, spec in enumerate(specs) if spec.grouped]
    if grouped:
        values[:, :, grouped_at] = sums.values()
        used[:, grouped_at] = sums.groups_used
        skipped[:, grouped_at] = sums.groups_skipped
    if wants_auc:
        s = next(s for s, spec in enumerate(specs) if not spec.grouped)
        thresholds, _ = label_rules(logs.schema.objectives)
        for j in range(m):
            # Same rule as the kernel: label > threshold, compared in float32.
            positives = layout.take(logs.labels[:, j], 0, logs.n_rows) > np.float32(thresholds[j])
            for c in range(n_candidates):
                values[c, j, s] = global_auc(fused_all[c], positives)
            defined = 0 < np.count_nonzero(positives) < logs.n_rows
            used[j, s], skipped[j, s] = int(defined), int(not defined)
    return _Scored(values, used, skipped)


def _bootstrap(logs: LogSet, layout: _Layout, templates: Sequence[_Template], n_candidates: int,
               grouped: tuple[MetricSpec, ...], chunk_rows: int, n_boot: int,
               seed: int) -> np.ndarray:
    """Bootstrap replicates of the grouped metrics, shape (n_boot, candidates, objectives, specs).

    Groups (requests or users, never rows) are dealt at random into at most
    :data:`BOOTSTRAP_BLOCKS` blocks; each replicate draws blocks with replacement
    (multinomial counts) and recomputes sums / weights from the blocks' metric sums.
    """
    rng = np.random.default_rng(seed)
    shuffled = layout.shuffled(rng)
    n_blocks = min(layout.n_groups, BOOTSTRAP_BLOCKS)
    bounds = np.linspace(0, layout.n_groups, n_blocks + 1).round().astype(np.int64)
    blocks = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    serial = logs.n_rows < SERIAL_BLOCK_ROWS * n_blocks
    with _serial_kernel() if serial else contextlib.nullcontext():
        per_block = _sweep(logs, shuffled, templates, n_candidates, grouped, chunk_rows, blocks)
    sums = np.stack([b.sums for b in per_block])        # (blocks, C, m, S)
    weights = np.stack([b.weights for b in per_block])
    counts = rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=n_boot)
    boot_sums = np.tensordot(counts, sums, axes=(1, 0))
    boot_weights = np.tensordot(counts, weights, axes=(1, 0))
    used = boot_weights > 0
    return np.where(used, boot_sums / np.where(used, boot_weights, 1.0), np.nan)


@contextlib.contextmanager
def _serial_kernel() -> Iterator[None]:
    """Run numba kernels single-threaded in this thread (the setting is thread-local).

    NOTE: a parallel launch costs more than a small call's work: 256 bootstrap blocks of
    4k rows took 7-16 s with two busy threads and 1.7 s with one.
    """
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _interval(replicates: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring NaN replicates (NaN if all are)."""
    empty = np.isnan(replicates).all(axis=0)
    filled = np.where(empty, 0.0, replicates)
    low, high = np.nanquantile(filled, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


# --- validation ------------------------------------------------------------------------------
def _as_formula(value: Any, field: str) -> Formula:
    # A FusionConfig (or anything else carrying a formula) stands for its formula.
    formula = getattr(value, "formula", value)
    if not isinstance(formula, Formula):
        raise FormulaError(
            f"{field} must be a Formula (or a config holding one), got {type(value).__name__}")
    return formula


def _check_settings(logs: Any, group_by: Any, chunk_rows: Any) -> None:
    if not isinstance(logs, LogSet):
        raise FusionError(
            f"logs must be a LogSet (see fusion.load_logs), got {type(logs).__name__}")
    if group_by not in GROUP_BY:
        raise FusionError(f"group_by: {group_by!r} is not one of {list(GROUP_BY)}")
    if (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer))
            or chunk_rows < 1):
        raise FusionError(f"chunk_rows must be a whole number >= 1, got {chunk_rows!r}")


def _check_bootstrap(ci: Any, n_boot: Any, seed: Any) -> None:
    if ci is None:
        return
    if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0 < ci < 1:
        raise FusionError(f"ci must be a confidence level in (0, 1) such as 0.95, got {ci!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise FusionError(f"n_boot must be a whole number >= 2, got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise FusionError(f"seed must be a whole number, got {seed!r}")


# --- evaluate --------------------------------------------------------------------------------
def _frozen(array: np.ndarray | None) -> np.ndarray | None:
    if array is not None:
        array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Metrics of one formula on some logs, optionally against a baseline formula.

    ``res[objective, metric]`` is the value; :meth:`to_frame` a tidy table. Arrays are
    read-only, shape (objectives, metrics) in the order of ``objectives`` and ``metrics``.

    Attributes
    ----------
    formula, baseline_formula : Formula, Formula or None
    objectives, metrics : tuple of str
        Objectives of the logs; canonical metric names (``"ndcg@10"``).
    group_by : {"request", "user"}
    values, baseline_values : ndarray of float64 (baseline_values None without a baseline)
        NaN where no group counts (e.g. gauc when every group has one class).
    groups_used, groups_skipped : ndarray of int64
        Groups that count toward each metric and groups left out (gauc: single-class group;
        ndcg: no positive gain; top: none). ``auc`` counts all rows as one group.
    ci, n_boot, seed : bootstrap settings (None without intervals)
    ci_low, ci_high : ndarray of float64 or None
        Percentile bootstrap interval of each value, resampling groups. NaN for ``auc``
        (not a sum over groups).
    delta_ci_low, delta_ci_high : ndarray of float64 or None
        Interval of the relative delta, from the same (paired) replicates.
    """

    formula: Formula
    baseline_formula: Formula | None
    objectives: tuple[str, ...]
    metrics: tuple[str, ...]
    group_by: str
    values: np.ndarray
    baseline_values: np.ndarray | None
    groups_used: np.ndarray
    groups_skipped: np.ndarray
    ci: float | None = None
    n_boot: int | None = None
    seed: int | None = None
    ci_low: np.ndarray | None = None
    ci_high: np.ndarray | None = None
    delta_ci_low: np.ndarray | None = None
    delta_ci_high: np.ndarray | None = None

    def __post_init__(self) -> None:
        for field in ("values", "baseline_values", "groups_used", "groups_skipped", "ci_low",
                      "ci_high", "delta_ci_low", "delta_ci_high"):
            _frozen(getattr(self, field))

    def _position(self, objective: str, metric: str) -> tuple[int, int]:
        if objective not in self.objectives:
            raise KeyError(f"unknown objective {objective!r}; evaluated: {list(self.objectives)}")
        name = str(parse_metric(metric))
        if name not in self.metrics:
            raise KeyError(f"metric {name!r} was not evaluated; evaluated: {list(self.metrics)}")
        return self.objectives.index(objective), self.metrics.index(name)

    def __getitem__(self, key: tuple[str, str]) -> float:
        objective, metric = key
        return float(self.values[self._position(objective, metric)])

    @property
    def delta(self) -> np.ndarray:
        """Relative change ``value / baseline - 1``; NaN without a baseline or where it is 0."""
        if self.baseline_values is None:
            return np.full(self.values.shape, np.nan)
        return _relative(self.values, self.baseline_values)

    def to_frame(self) -> pd.DataFrame:
        """One row per (objective, metric).

        Columns: objective, metric, value, baseline, delta, groups_used, groups_skipped,
        ci_low, ci_high, delta_ci_low, delta_ci_high (NaN where not computed).
        """
        m, s = self.values.shape
        nothing = np.full((m, s), np.nan)

        def column(array: np.ndarray | None) -> np.ndarray:
            return (nothing if array is None else array).reshape(-1)

        return pd.DataFrame({
            "objective": np.repeat(self.objectives, s),
            "metric": np.tile(self.metrics, m),
            "value": column(self.values),
            "baseline": column(self.baseline_values),
            "delta": column(self.delta),
            "groups_used": self.groups_used.reshape(-1),
            "groups_skipped": self.groups_skipped.reshape(-1),
            "ci_low": column(self.ci_low),
            "ci_high": column(self.ci_high),
            "delta_ci_low": column(self.delta_ci_low),
            "delta_ci_high": column(self.delta_ci_high),
        })

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (NaN becomes None): settings and one record per metric."""
        records = self.to_frame().astype(object)
        records = records.where(records.notna(), None).to_dict(orient="records")
        for record in records:
            record["groups_used"] = int(record["groups_used"])
            record["groups_skipped"] = int(record["groups_skipped"])
        return {
            "formula": self.formula.to_dict(),
            "baseline": None if self.baseline_formula is None else self.baseline_formula.to_dict(),
            "group_by": self.group_by,
            "ci": self.ci,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "metrics": records,
        }


def _relative(values: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    defined = np.isfinite(baseline) & (baseline != 0)
    return np.where(defined, values / np.where(defined, baseline, 1.0) - 1.0, np.nan)


def evaluate(
    logs: LogSet,
    formula: Formula,
    metrics: Sequence[str] = DEFAULT_METRICS,
    group_by: str = "request",
    baseline: Formula | None = None,
    *,
    ci: float | None = None,
    n_boot: int = 200,
    seed: int = 0,
    chunk_rows: int = CHUNK_ROWS,
) -> EvaluationResult:
    """Ranking metrics of ``formula``'s fused scores on ``logs``, per objective.

    Parameters
    ----------
    logs : LogSet
    formula : Formula (or a FusionConfig, meaning its formula)
    metrics : sequence of str
        ``"gauc"``, ``"ndcg@K"``, ``"top@K"`` (per group) and ``"auc"`` (global; keeps every
        row's fused score and sorts all rows once per objective). See :mod:`fusion.metrics`
        for tie rules and skipped groups.
    group_by : {"request", "user"}
        Groups of the per-group metrics. ``"user"`` needs each request to belong to one user.
        Within-request transforms and ranks of the formula always use requests.
    baseline : Formula or None
        Also evaluated (in the same pass); ``delta`` is ``value / baseline - 1``.
    ci : float or None
        Confidence level of percentile bootstrap intervals (e.g. 0.95) of each value and,
        with a baseline, of each delta (paired: the same resamples). Groups (requests or
        users) are resampled, never rows. Costs one more pass over the logs in
        :data:`BOOTSTRAP_BLOCKS` kernel calls (about 1.7 s more at 1M rows); with more
        groups than that, random blocks of whole groups are resampled. ``auc`` gets none.
    n_boot, seed : int
        Bootstrap replicates and their seed (results are reproducible).
    chunk_rows : int
        Rows per chunk of whole groups (memory bound). Results do not depend on it beyond
        the last bits of floating-point sums.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    FormulaError, MetricError, FusionError
        Bad formula or baseline (unknown objective, log of a non-positive score), unknown
        metric or K < 1, bad ``group_by``/``ci``; all checked before any work.
    """
    _check_settings(logs, group_by, chunk_rows)
    formula = _as_formula(formula, "formula")
    baseline_formula = None if baseline is None else _as_formula(baseline, "baseline")
    specs = parse_metrics(metrics)
    _check_bootstrap(ci, n_boot, seed)
    formulas = [formula] if baseline_formula is None else [formula, baseline_formula]
    for each in formulas:
        each.validate_for(logs)
    layout = _layout(logs, group_by)

    templates = [_Template(f, f.weight_vector(logs.objectives)[np.newaxis], np.array([c]))
                 for c, f in enumerate(formulas)]
    scored = _score(logs, layout, templates, len(formulas), specs, int(chunk_rows))
    intervals: dict[str, Any] = {}
    grouped_at = [s for s, spec in enumerate(specs) if spec.grouped]
    if ci is not None and grouped_at:
        grouped = tuple(specs[s] for s in grouped_at)
        replicates = _bootstrap(logs, layout, templates, len(formulas), grouped,
                                int(chunk_rows), int(n_boot), int(seed))
        shape = scored.groups_used.shape
        for name, reps in [("", replicates[:, 0])] + (
                [("delta_", _relative(replicates[:, 0], replicates[:, 1]))]
                if baseline_formula is not None else []):
            low, high = np.full(shape, np.nan), np.full(shape, np.nan)
            low[:, grouped_at], high[:, grouped_at] = _interval(reps, float(ci))
            intervals[f"{name}ci_low"], intervals[f"{name}ci_high"] = low, high
    return EvaluationResult(
        formula=formula,
        baseline_formula=baseline_formula,
        objectives=tuple(logs.objectives),
        metrics=tuple(str(s) for s in specs),
        group_by=group_by,
        values=scored.values[0],
        baseline_values=None if baseline_formula is None else scored.values[1],
        groups_used=scored.groups_used,
        groups_skipped=scored.groups_skipped,
        ci=None if ci is None else float(ci),
        n_boot=None if ci is None else int(n_boot),
        seed=None if ci is None else int(seed),
        **intervals,
    )


# --- evaluate_many ---------------------------------------------------------------------------
def _matrix(values: Any, objectives: Sequence[str], field: str, prefix: str
            ) -> tuple[np.ndarray, list[str], pd.Index | None]:
    """A (candidates, columns) float matrix from an array or a DataFrame, its objective names
    and the DataFrame's index."""
    if isinstance(values, pd.DataFrame):
        prefixed = [c for c in values.columns if isinstance(c, str) and c.startswith(prefix)]
        columns = prefixed or list(values.columns)
        names = [str(c)[len(prefix):] if prefixed else str(c) for c in columns]
        unknown = [n for n in names if n not in objectives]
        if unknown:
            raise FormulaError(
                f"{field}: {len(unknown)} column(s) name no objective of the logs, e.g. "
                f"{unknown[0]!r}; the logs have {list(objectives)}")
        try:
            matrix = values[columns].to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise FormulaError(f"{field}: every column must hold numbers") from None
        return matrix, names, values.index
    try:
        matrix = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise FormulaError(f"{field} must be a numeric array or a DataFrame, "
                           f"got {type(values).__name__}") from None
    if matrix.ndim == 1 and matrix.shape[0] == len(objectives):
        matrix = matrix[np.newaxis]
    if matrix.ndim != 2 or matrix.shape[1] != len(objectives):
        raise FormulaError(
            f"{field}: expected shape (candidates, {len(objectives)}) with columns in the logs' "
            f"objective order {list(objectives)}, got shape {matrix.shape}")
    return matrix, list(objectives), None


def _bad_cells(matrix: np.ndarray, bad: np.ndarray, names: Sequence[str], field: str,
               what: str) -> None:
    count = int(np.count_nonzero(bad))
    if count:
        c, j = np.argwhere(bad)[0]
        raise FormulaError(
            f"{field}: {count} value(s) {what}, e.g. candidate {c}, objective {names[j]!r}: "
            f"{float(matrix[c, j])!r}")


def _weight_matrix(weights: Any, objectives: Sequence[str]) -> tuple[np.ndarray, pd.Index | None]:
    given, names, index = _matrix(weights, objectives, "weights", "w:")
    if given.shape[0] == 0:
        raise FormulaError("weights: no candidate (0 rows)")
    _bad_cells(given, ~np.isfinite(given), names, "weights", "are NaN or infinite")
    _bad_cells(given, given < 0, names, "weights", "are negative")
    zero = np.flatnonzero(~(given > 0).any(axis=1))
    if zero.size:
        raise FormulaError(
            f"weights: {zero.size} candidate(s) have every weight 0, e.g. candidate {zero[0]}; "
            "at least one weight per candidate must be > 0")
    matrix = np.zeros((given.shape[0], len(objectives)))
    matrix[:, [objectives.index(n) for n in names]] = given
    return matrix, index


def _alpha_rows(alphas: Any, objectives: Sequence[str], n_candidates: int
                ) -> tuple[list[dict[str, float]], np.ndarray | None, list[str]]:
    """Per-candidate alpha mappings; the matrix and names when they vary by candidate."""
    if alphas is None or isinstance(alphas, Mapping):
        shared = dict(alphas or {})
        unknown = [n for n in shared if n not in objectives]
        if unknown:
            raise FormulaError(f"alphas: {len(unknown)} objective(s) not in the logs, e.g. "
                               f"{unknown[0]!r}; the logs have {list(objectives)}")
        return [shared] * n_candidates, None, []
    matrix, names, _ = _matrix(alphas, objectives, "alphas", "alpha:")
    if matrix.shape[0] != n_candidates:
        raise FormulaError(f"alphas: {matrix.shape[0]} row(s) for {n_candidates} candidate(s); "
                           "give one row per candidate or one mapping for all")
    _bad_cells(matrix, ~np.isfinite(matrix), names, "alphas", "are NaN or infinite")
    return [dict(zip(names, row.tolist())) for row in matrix], matrix, names


def _templates(kind: str, weights: np.ndarray, alpha_rows: list[dict[str, float]],
               transforms: Mapping[str, str] | None, k: float | None,
               objectives: Sequence[str]) -> list[_Template]:
    """One template per distinct alpha setting; it computes the features of every objective
    that any of its candidates weighs."""
    groups: dict[tuple, list[int]] = {}
    for c, row in enumerate(alpha_rows):
        groups.setdefault(tuple(sorted(row.items())), []).append(c)
    templates = []
    for key, members in groups.items():
        positions = np.array(members)
        used = (weights[positions] > 0).any(axis=0)
        formula = Formula.of(kind, {o: float(u) for o, u in zip(objectives, used)},
                             alphas=dict(key), transforms=transforms, k=k)
        templates.append(_Template(formula, weights[positions], positions))
    return templates


def evaluate_many(
    logs: LogSet,
    kind: str,
    weights: Any,
    alphas: Mapping[str, float] | Any | None = None,
    transforms: Mapping[str, str] | None = None,
    k: float | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    group_by: str = "request",
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame:
    """Metrics of many weight vectors of one formula kind, sharing the work.

    Row ``c`` equals ``evaluate(logs, Formula.of(kind, weights[c], ...))`` exactly.

    Parameters
    ----------
    logs : LogSet
    kind : {"sum", "product", "rank"}
    weights : array (candidates, objectives) or DataFrame
        Array columns follow ``logs.objectives``. A DataFrame names its columns by objective
        (``"click"``) or as ``"w:click"`` (then other columns are not read); objectives it
        leaves out weigh 0; its index becomes the result's index. Weights must be finite and
        ``>= 0`` with at least one ``> 0`` per candidate.
    alphas : mapping, array (candidates, objectives) or DataFrame, optional
        One mapping for all candidates, or one row per candidate (DataFrame columns named by
        objective or ``"alpha:<o>"``); see :class:`Formula` for which objectives take one.
    transforms : mapping, optional
        ``sum`` only: per-objective transform, shared by all candidates.
    k : float, optional
        ``rank`` only (default 60).
    metrics, group_by, chunk_rows
        As in :func:`evaluate`.

    Returns
    -------
    DataFrame
        One row per candidate: ``"w:<o>"`` for every objective of the logs, ``"alpha:<o>"``
        when alphas vary by candidate, then ``"<o>:<metric>"`` for every objective and
        metric.

    Raises
    ------
    FormulaError, MetricError, FusionError
        Bad weights (shape, NaN, negative, all-zero row, unknown objective column), alphas,
        transforms, metrics or settings; all checked before any work.
    """
    _check_settings(logs, group_by, chunk_rows)
    if kind not in KINDS:
        raise FormulaError(f"kind: {kind!r} is not one of {list(KINDS)}")
    specs = parse_metrics(metrics)
    objectives = list(logs.objectives)
    matrix, index = _weight_matrix(weights, objectives)
    alpha_rows, alpha_matrix, alpha_names = _alpha_rows(alphas, objectives, matrix.shape[0])
    unknown = [n for n in (transforms or {}) if n not in objectives]
    if unknown:
        raise FormulaError(f"transforms: {len(unknown)} objective(s) not in the logs, e.g. "
                           f"{unknown[0]!r}; the logs have {objectives}")
    templates = _templates(kind, matrix, alpha_rows, transforms, k, objectives)
    for template in templates:
        template.formula.validate_for(logs)
    layout = _layout(logs, group_by)

    n_candidates = matrix.shape[0]
    # Only the global auc holds fused scores (of every row); the grouped metrics' memory is
    # their accumulators, and a batch the kernel takes in one layout keeps every bit the
    # same as evaluating each candidate alone.
    batch = candidates_per_call(len(objectives), len(specs))
    if any(not s.grouped for s in specs):
        batch = min(batch, max(1, FUSED_BUDGET_BYTES // (8 * logs.n_rows)))
    values = np.empty((n_candidates, len(objectives), len(specs)))
    for first in range(0, n_candidates, batch):
        members = np.arange(first, min(first + batch, n_candidates))
        in_batch = []
        for template in templates:
            mask = np.isin(template.positions, members)
            if mask.any():
                in_batch.append(_Template(template.formula, template.weights[mask],
                                          template.positions[mask] - first))
        values[members] = _score(logs, layout, in_batch, len(members), specs,
                                 int(chunk_rows)).values

    columns: dict[str, np.ndarray] = {f"w:{o}": matrix[:, j] for j, o in enumerate(objectives)}
    if alpha_matrix is not None:
        columns.update({f"alpha:{o}": alpha_matrix[:, j] for j, o in enumerate(alpha_names)})
    for j, objective in enumerate(objectives):
        for s, spec in enumerate(specs):
            columns[f"{objective}:{spec}"] = values[:, j, s]
    return pd.DataFrame(columns, index=index)

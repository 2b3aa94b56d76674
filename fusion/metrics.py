"""Per-request ranking metrics of fused scores: exact, tie-aware, fast.

Metric names (:func:`parse_metric`): ``"gauc"``, ``"ndcg@K"``, ``"top@K"`` are computed per
group (a request, or a user) by :func:`grouped_metric_sums` (given fused scores) or
:func:`combined_metric_sums` (given features and weight vectors: the kernel fuses each group
itself); ``"auc"`` is one global AUC over all rows (:func:`global_auc`).

Ties in the fused score are never broken by row order; every metric uses its tie-aware
definition, so results do not depend on how the logs were sorted:

- gauc: average ranks (Mann-Whitney), which equals scikit-learn's ``roc_auc_score`` per group.
- ndcg@K, top@K: scikit-learn's ``ndcg_score(ignore_ties=False)`` tie averaging: the items of
  a tie block share the block's average gain (top@K: average label), multiplied by the sum of
  the discounts (top@K: the count) of the block's positions that fall within the first K.
  This is the expectation over all orderings of the tied items.

The hot loop is a numba kernel (``nogil``) run on chunks of whole groups by a few threads.
Each group's labels are read once and its ideal DCG computed once; then, per candidate, the
group's fused scores are computed into scratch and only the items that matter are ranked:
the positives (gauc) and the labelled items that can reach the first K slots (ndcg/top), by
vectorised counting, or by sorting the group when that is cheaper. Memory beyond the inputs
is per-chunk scratch the size of the largest group plus one accumulator of shape
(candidates, objectives, specs) per chunk (at most 64 chunks).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

from .errors import InvalidValueError, MetricError
from .schema import Objective

__all__ = [
    "GROUPED_METRICS",
    "METRIC_NAMES",
    "MetricSpec",
    "MetricSums",
    "global_auc",
    "candidates_per_call",
    "combined_metric_sums",
    "grouped_metric_sums",
    "label_rules",
    "parse_metric",
    "parse_metrics",
]

METRIC_NAMES: tuple[str, ...] = ("gauc", "ndcg", "top", "auc")
GROUPED_METRICS: tuple[str, ...] = ("gauc", "ndcg", "top")
_WITH_K = ("ndcg", "top")
_METRIC = re.compile(r"^([a-z]+)(?:@(.*))?$")

# Kernel codes of the grouped metrics (order of GROUPED_METRICS).
_GAUC, _NDCG, _TOP = 0, 1, 2
# Groups are cut into at most _MAX_CHUNKS chunks of at least _MIN_CHUNK_ROWS rows, handed to
# threads one at a time; each chunk has its own accumulators (candidates x objectives x specs).
_MAX_CHUNKS = 64
_MIN_CHUNK_ROWS = 8192
_ACCUMULATOR_BUDGET_BYTES = 256 << 20
# Ranking items by counting costs one vectorised pass per item; a group is sorted instead
# when counting would cost more than this many passes over the whole group (the crossover
# measured on 50..5000-item groups).
_COUNTING_MAX = 192
# Above this K, every item is a top-K candidate (no cut is computed).
_SELECT_K_MAX = 64


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A parsed metric name: ``name`` in :data:`METRIC_NAMES`, ``k`` for ndcg/top, else None.

    ``str(spec)`` gives the canonical name back (``"ndcg@10"``, ``"gauc"``).
    """

    name: str
    k: int | None = None

    def __post_init__(self) -> None:
        if self.name not in METRIC_NAMES:
            raise MetricError(f"unknown metric {self.name!r}; use one of "
                              "'gauc', 'ndcg@K', 'top@K', 'auc'")
        if self.name in _WITH_K:
            if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
                raise MetricError(f"metric {self.name!r} needs a cut-off K >= 1 (e.g. "
                                  f"'{self.name}@10'), got K={self.k!r}")
            object.__setattr__(self, "k", int(self.k))
        elif self.k is not None:
            raise MetricError(f"metric {self.name!r} takes no cut-off, got K={self.k!r}")

    def __str__(self) -> str:
        return self.name if self.k is None else f"{self.name}@{self.k}"

    @property
    def grouped(self) -> bool:
        """True for the per-group metrics (gauc, ndcg@K, top@K), False for global auc."""
        return self.name in GROUPED_METRICS


def parse_metric(metric: str | MetricSpec) -> MetricSpec:
    """Parse ``"gauc"``, ``"ndcg@K"``, ``"top@K"`` or ``"auc"`` (K a whole number >= 1).

    Raises
    ------
    MetricError
        Unknown name, missing or malformed K (``"ndcg"``, ``"ndcg@0"``, ``"top@x"``), or a K on
        a metric that takes none (``"gauc@5"``).
    """
    if isinstance(metric, MetricSpec):
        return metric
    if not isinstance(metric, str):
        raise MetricError(f"a metric must be a name such as 'ndcg@10', got {metric!r}")
    match = _METRIC.match(metric.strip().lower())
    if match is None:
        raise MetricError(f"malformed metric {metric!r}; use 'gauc', 'ndcg@K', 'top@K' or 'auc'")
    name, k_text = match.groups()
    if k_text is None:
        return MetricSpec(name)
    if not k_text.isdigit():
        raise MetricError(f"metric {metric!r}: K must be a whole number >= 1, got {k_text!r}")
    return MetricSpec(name, int(k_text))


def parse_metrics(metrics: Iterable[str | MetricSpec]) -> tuple[MetricSpec, ...]:
    """Parse several metric names; reject an empty list and repeated metrics."""
    if isinstance(metrics, (str, MetricSpec)):
        metrics = [metrics]
    specs = tuple(parse_metric(m) for m in metrics)
    if not specs:
        raise MetricError("no metric given; use e.g. ['gauc', 'ndcg@10', 'top@10']")
    names = [str(s) for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise MetricError(f"{len(repeated)} metric(s) repeated, e.g. {repeated[0]!r}")
    return specs


def label_rules(objectives: Sequence[Objective]) -> tuple[np.ndarray, np.ndarray]:
    """``(positive_thresholds float64, log1p_gain bool)`` of objectives, in their order."""
    thresholds = np.array([o.positive_threshold for o in objectives], dtype=np.float64)
    log1p_gain = np.array([o.gain == "log1p" for o in objectives], dtype=bool)
    return thresholds, log1p_gain


@dataclasses.dataclass(frozen=True, eq=False)
class MetricSums:
    """Additive per-group metric sums of a set of candidates; ``values()`` gives the metrics.

    Attributes
    ----------
    sums, weights : ndarray of float64, shape (candidates, objectives, specs)
        gauc: sum of ``n_g * AUC_g`` and sum of ``n_g`` over the groups used;
        ndcg@K: sum of ``NDCG_g`` and the number of groups used;
        top@K: sum of ``top_g`` and the number of groups (every group is used).
        Weights do not depend on the candidate (which groups count depends on labels only).
    groups_used, groups_skipped : ndarray of int64, shape (objectives, specs)
        Groups that count toward each metric and those left out (gauc: single-class group;
        ndcg: ideal DCG of 0; top: never).
    specs : tuple of MetricSpec
        The metrics along the last axis.

    Sums of chunks of whole groups add up: ``a + b`` is the sums over both chunks.
    """

    sums: np.ndarray
    weights: np.ndarray
    groups_used: np.ndarray
    groups_skipped: np.ndarray
    specs: tuple[MetricSpec, ...]

    def __add__(self, other: MetricSums) -> MetricSums:
        if not isinstance(other, MetricSums):
            return NotImplemented
        if other.specs != self.specs or other.sums.shape != self.sums.shape:
            raise MetricError(
                "cannot add metric sums of different metrics or shapes: "
                f"{[str(s) for s in self.specs]} {self.sums.shape} vs "
                f"{[str(s) for s in other.specs]} {other.sums.shape}"
            )
        return MetricSums(
            sums=self.sums + other.sums,
            weights=self.weights + other.weights,
            groups_used=self.groups_used + other.groups_used,
            groups_skipped=self.groups_skipped + other.groups_skipped,
            specs=self.specs,
        )

    def values(self) -> np.ndarray:
        """Metric values ``sums / weights``, shape (candidates, objectives, specs).

        NaN where no group was used (e.g. gauc when every group has a single class).
        """
        used = self.weights > 0
        return np.where(used, self.sums / np.where(used, self.weights, 1.0), np.nan)


def grouped_metric_sums(
    fused: np.ndarray,
    labels: np.ndarray,
    group_offsets: np.ndarray,
    *,
    specs: Sequence[str | MetricSpec],
    positive_thresholds: np.ndarray,
    log1p_gain: np.ndarray,
) -> MetricSums:
    """Per-group gauc / ndcg@K / top@K sums of every candidate's fused ranking, per objective.

    Parameters
    ----------
    fused : ndarray of float64, shape (candidates, rows) or (rows,)
        Fused scores; higher ranks first. NaN is rejected; +-inf are ordinary values.
    labels : ndarray of float32, shape (rows, objectives)
        Observed labels (finite, >= 0).
    group_offsets : ndarray of int64, shape (groups + 1,)
        Rows of group ``g`` are ``group_offsets[g]:group_offsets[g + 1]``; starts at 0, ends
        at ``rows``, every group non-empty.
    specs : sequence of metric names or MetricSpec
        Per-group metrics only (``"gauc"``, ``"ndcg@K"``, ``"top@K"``); ``"auc"`` is global,
        see :func:`global_auc`.
    positive_thresholds : ndarray of float64, shape (objectives,)
        A row is a positive of objective ``j`` when ``label > positive_thresholds[j]``; the
        comparison is made in float32, the precision the labels are stored in.
    log1p_gain : ndarray of bool, shape (objectives,)
        NDCG gain ``log1p(label)`` where True, ``label`` where False. top@K always sums raw labels.

    Returns
    -------
    MetricSums
        ``.values()`` has shape (candidates, objectives, specs).

    Notes
    -----
    Per group ``g`` of ``n`` rows, with the fused scores sorted descending and cut into tie
    blocks (runs of equal scores):

    - gauc: ``AUC_g = (R+ - P(P+1)/2) / (P N)``, ``R+`` the sum of the positives' average
      ascending ranks (a tie block shares the mean of its ranks); ``P``/``N`` positives and
      negatives. Groups with ``P == 0`` or ``N == 0`` (single-class, including size 1) are
      skipped. GAUC = ``sum n_g AUC_g / sum n_g``.
    - ndcg@K: ``DCG@K = sum over tie blocks of mean gain of the block x sum of 1/log2(r+1)
      for the block's positions r <= K``; ``IDCG@K`` the DCG of the gains sorted descending
      (ties there change nothing). Groups with ``IDCG == 0`` (no positive gain) are skipped;
      NDCG@K is their mean. A group of size 1 with a positive gain has NDCG 1.
    - top@K: the same tie averaging with gain = raw label and discount 1: the expected sum of
      labels in the first K slots. Every group counts, including all-zero ones.
    - A group smaller than K (any K larger than the group) uses all of its rows: ndcg@K is then
      the full NDCG and top@K the sum of its labels.

    Results are reproducible to the bit: groups are cut into chunks by row count (never by
    thread count), each chunk adds its groups in order and the chunks are added in order, so
    a candidate gets the same bits alone or among others, on any number of threads
    (``NUMBA_NUM_THREADS``, default: every CPU).

    Raises
    ------
    MetricError
        A malformed metric name, or the global ``"auc"`` among ``specs``.
    InvalidValueError
        Mismatched shapes, ``group_offsets`` not rising strictly from 0 to ``rows``, a NaN
        fused score, a negative, NaN or infinite label (each message gives the count and one
        example).
    """
    fused = np.asarray(fused)
    if fused.ndim == 1:
        fused = fused[np.newaxis, :]
    fused = np.ascontiguousarray(fused, dtype=np.float64)
    if fused.ndim != 2:
        raise InvalidValueError(f"fused scores must be (candidates, rows), got shape {fused.shape}")
    n_candidates, n_rows = fused.shape
    # Candidate c's score of row r is the single term fused[c, r] * 1.0 (exact).
    terms = (np.arange(n_candidates + 1, dtype=np.int64), np.arange(n_candidates, dtype=np.int64),
             np.ones(n_candidates))
    return _metric_sums(fused.reshape(-1), 1, n_rows, n_rows, terms, labels, group_offsets,
                        specs, positive_thresholds, log1p_gain, "fused scores")


def combined_metric_sums(
    features: np.ndarray,
    weights: np.ndarray,
    labels: np.ndarray,
    group_offsets: np.ndarray,
    *,
    specs: Sequence[str | MetricSpec],
    positive_thresholds: np.ndarray,
    log1p_gain: np.ndarray,
) -> MetricSums:
    """:func:`grouped_metric_sums` of the fused scores ``combine(features, weights)``, fused
    group by group inside the kernel: no (candidates, rows) matrix is ever built.

    Parameters
    ----------
    features : ndarray of float64, shape (rows, m)
        Per-row features (:meth:`fusion.Formula.features`).
    weights : ndarray of float64, shape (candidates, m) or (m,)
        Candidate ``c``'s fused score of row ``r`` is ``sum_j weights[c, j] * features[r, j]``
        over the ``j`` with a non-zero weight, accumulated in ``j`` order exactly as
        :func:`fusion.formulas.combine` does, so the metrics equal those of
        ``grouped_metric_sums(combine(features, weights), ...)`` to the bit.
    labels, group_offsets, specs, positive_thresholds, log1p_gain
        As in :func:`grouped_metric_sums`.

    Returns
    -------
    MetricSums
        ``.values()`` has shape (candidates, objectives, specs).

    Raises
    ------
    MetricError, InvalidValueError
        As :func:`grouped_metric_sums`; also mismatched feature / weight shapes and
        non-finite weights. A NaN fused score (e.g. a NaN feature of a weighted column)
        names the candidate and the row.
    """
    features = np.asarray(features, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 1:
        weights = weights[np.newaxis, :]
    if features.ndim != 2 or weights.ndim != 2 or weights.shape[1] != features.shape[1]:
        raise InvalidValueError(
            f"features must be (rows, m) and weights (candidates, m), got shapes "
            f"{features.shape} and {weights.shape}")
    if not np.all(np.isfinite(weights)):
        c, j = np.argwhere(~np.isfinite(weights))[0]
        raise InvalidValueError(
            f"weights: {int(np.count_nonzero(~np.isfinite(weights)))} value(s) are NaN or "
            f"infinite, e.g. candidate {c}, column {j}: {float(weights[c, j])!r}")
    n_rows = features.shape[0]
    # One column after the other: the kernel's fusion loops then read contiguous memory.
    columns = np.ascontiguousarray(features.T)
    return _metric_sums(columns.reshape(-1), 1, n_rows, n_rows, weight_terms(weights), labels,
                        group_offsets, specs, positive_thresholds, log1p_gain, "fused scores")


def weight_terms(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero weights of each candidate, in column order: ``(starts, columns, values)``.

    Candidate ``c``'s terms are ``columns[starts[c]:starts[c + 1]]`` with weights
    ``values[...]`` (compressed sparse rows of ``weights`` (candidates, m)). Leaving zero
    weights out changes no comparison (``s + 0 * x`` equals ``s``) and keeps an unweighted
    infinite feature from turning into NaN.
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    rows, columns = np.nonzero(weights)  # row-major: candidate by candidate, columns ascending
    starts = np.zeros(weights.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=weights.shape[0]), out=starts[1:])
    return starts, columns.astype(np.int64), np.ascontiguousarray(weights[rows, columns])


def candidates_per_call(n_objectives: int, n_specs: int) -> int:
    """The most candidates one call can score with a chunk layout (hence bits) that does not
    depend on the number of candidates: their accumulators of :data:`_MAX_CHUNKS` chunks stay
    within the accumulator budget."""
    cells = 8 * max(1, n_objectives) * max(1, n_specs) * _MAX_CHUNKS
    return max(1, _ACCUMULATOR_BUDGET_BYTES // cells)


def _metric_sums(values, row_stride, column_stride, n_rows, terms, labels, group_offsets, specs,
                 positive_thresholds, log1p_gain, what) -> MetricSums:
    """Check the inputs and run the kernel over chunks of groups; ``values`` (flat) holds
    column ``j`` of row ``r`` at ``r * row_stride + j * column_stride``."""
    specs = parse_metrics(specs)
    not_grouped = [str(s) for s in specs if not s.grouped]
    if not_grouped:
        raise MetricError(f"{not_grouped[0]!r} is a global metric, not a per-group one; "
                          "compute it with global_auc")
    labels = np.ascontiguousarray(labels, dtype=np.float32)
    offsets = np.ascontiguousarray(group_offsets, dtype=np.int64)
    if labels.ndim != 2:
        raise InvalidValueError(f"labels must be (rows, objectives), got shape {labels.shape}")
    n_objectives = labels.shape[1]
    if n_rows != labels.shape[0]:
        raise InvalidValueError(
            f"{what} have {n_rows} rows but labels have {labels.shape[0]}")
    _check_offsets(offsets, n_rows)
    thresholds = _per_objective(positive_thresholds, n_objectives, "positive_thresholds",
                                np.float64)
    log1p_gain = _per_objective(log1p_gain, n_objectives, "log1p_gain", np.bool_)
    # min/max propagate NaN: two passes, no temporary array.
    if labels.size and not (labels.min() >= 0 and labels.max() < np.inf):
        bad_mask = ~((labels >= 0) & (labels < np.inf))
        row, j = np.argwhere(bad_mask)[0]
        raise InvalidValueError(
            f"labels: {int(bad_mask.sum())} value(s) are negative, NaN or inf, e.g. row {row}, "
            f"objective {j}: {float(labels[row, j])!r}")

    term_starts, term_columns, term_weights = terms
    n_candidates = term_starts.shape[0] - 1
    kinds = np.array([GROUPED_METRICS.index(s.name) for s in specs], dtype=np.int64)
    ks = np.array([s.k or 0 for s in specs], dtype=np.int64)
    sizes = np.diff(offsets)
    n_discounts = min(int(ks.max()), int(sizes.max()))
    # NOTE: discounts as scikit-learn writes them (1 / (log(r+1) / log 2)), so the two agree
    # to the last bits; cum_discount[r] = sum of the discounts of positions 1..r.
    discount = 1.0 / (np.log(np.arange(n_discounts, dtype=np.float64) + 2.0) / np.log(2.0))
    cum_discount = np.concatenate(([0.0], np.cumsum(discount)))
    chunk_starts = _chunk_starts(offsets, n_candidates * n_objectives * len(specs))
    n_chunks = chunk_starts.shape[0] - 1
    sums = np.zeros((n_chunks, n_candidates, n_objectives, len(specs)))
    weights = np.zeros((n_chunks, n_objectives, len(specs)))
    used = np.zeros((n_chunks, n_objectives, len(specs)), dtype=np.int64)
    # Per chunk: NaN fused scores, and the candidate and row of the first one.
    nan_found = np.zeros((n_chunks, 3), dtype=np.int64)
    thresholds32 = thresholds.astype(np.float32)
    counting_max = _COUNTING_MAX

    def run(chunk: int) -> None:
        _chunk_sums(values, row_stride, column_stride, term_starts, term_columns, term_weights,
                    labels, offsets, chunk_starts[chunk], chunk_starts[chunk + 1], kinds, ks,
                    thresholds32, log1p_gain, cum_discount, counting_max, sums[chunk],
                    weights[chunk], used[chunk], nan_found[chunk])

    _run_chunks(n_chunks, run)
    bad_chunks = np.flatnonzero(nan_found[:, 0])
    if bad_chunks.size:
        _, candidate, row = nan_found[bad_chunks[0]]
        raise InvalidValueError(
            f"{what}: {int(nan_found[:, 0].sum())} value(s) are NaN, e.g. candidate "
            f"{candidate}, row {row}")
    n_groups = offsets.shape[0] - 1
    # Chunks are reduced in a fixed order, so results do not depend on the thread count.
    sums = sums.sum(axis=0)
    weights = np.broadcast_to(weights.sum(axis=0), sums.shape).copy()
    groups_used = used.sum(axis=0)
    return MetricSums(sums=sums, weights=weights, groups_used=groups_used,
                      groups_skipped=n_groups - groups_used, specs=specs)


def global_auc(fused: np.ndarray, positives: np.ndarray) -> float:
    """AUC of one ranking of all rows (no grouping), ties counted half.

    Parameters
    ----------
    fused : ndarray of float64, shape (rows,)
    positives : ndarray of bool, shape (rows,)

    Returns
    -------
    float
        ``(R+ - P(P+1)/2) / (P N)`` with ``R+`` the sum of the positives' average ranks
        (Mann-Whitney; equals scikit-learn's ``roc_auc_score``). NaN when every row is
        positive or every row is negative (AUC is undefined with one class).
    """
    fused = np.asarray(fused, dtype=np.float64)
    positives = np.asarray(positives)
    if fused.ndim != 1 or positives.shape != fused.shape:
        raise InvalidValueError(
            f"global_auc needs 1-D fused scores and positives of the same length, got shapes "
            f"{fused.shape} and {positives.shape}")
    if positives.dtype != np.bool_:
        raise InvalidValueError(f"positives must be bool, got {positives.dtype}")
    bad, example = _count_nan(fused)
    if bad:
        raise InvalidValueError(f"fused scores: {bad} value(s) are NaN, e.g. row {example}")
    n_pos = int(np.count_nonzero(positives))
    n_neg = fused.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(fused)  # numpy's sort beats a hand-written one here
    rank_sum = _sorted_rank_sum(fused[order], positives[order])
    return float((rank_sum - n_pos * (n_pos + 1.0) * 0.5) / (n_pos * n_neg))


# --- validation helpers ----------------------------------------------------------------------
def _check_offsets(offsets: np.ndarray, n_rows: int) -> None:
    if offsets.ndim != 1 or offsets.shape[0] < 2:
        raise InvalidValueError(
            f"group_offsets must be 1-D with at least 2 entries, got shape {offsets.shape}")
    if offsets[0] != 0 or offsets[-1] != n_rows:
        raise InvalidValueError(
            f"group_offsets must start at 0 and end at the row count {n_rows}, got "
            f"{int(offsets[0])} .. {int(offsets[-1])}")
    sizes = np.diff(offsets)
    bad = int(np.count_nonzero(sizes <= 0))
    if bad:
        g = int(np.argmax(sizes <= 0))
        raise InvalidValueError(
            f"group_offsets: {bad} group(s) are empty or reversed, e.g. group {g}: "
            f"{int(offsets[g])} -> {int(offsets[g + 1])}")


def _per_objective(values, n_objectives: int, name: str, dtype) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=dtype)
    if array.shape != (n_objectives,):
        raise InvalidValueError(
            f"{name} must have one value per objective ({n_objectives}), got shape {array.shape}")
    if dtype is np.float64 and not np.all(np.isfinite(array)):
        raise InvalidValueError(f"{name}: every threshold must be finite, got {array.tolist()}")
    return array


def _chunk_starts(offsets: np.ndarray, accumulator_cells: int) -> np.ndarray:
    """Group indices cutting the groups into chunks of about equal row counts.

    The layout (hence every bit of the result) depends on the groups only -- not on the
    thread count, nor on the number of candidates unless their accumulators would pass
    :data:`_ACCUMULATOR_BUDGET_BYTES`.
    """
    n_groups = offsets.shape[0] - 1
    by_rows = -(-int(offsets[-1]) // _MIN_CHUNK_ROWS)
    by_memory = max(1, _ACCUMULATOR_BUDGET_BYTES // (8 * max(1, accumulator_cells)))
    n_chunks = max(1, min(n_groups, _MAX_CHUNKS, by_rows, by_memory))
    targets = np.linspace(0, offsets[-1], n_chunks + 1)[1:-1]
    inner = np.searchsorted(offsets, targets, side="left")
    return np.unique(np.concatenate(([0], inner, [n_groups]))).astype(np.int64)


def _thread_count() -> int:
    # numba's setting (NUMBA_NUM_THREADS, default: the CPU count); read from the config so
    # that numba's own thread pool is never started.
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


_POOL_LOCK = threading.Lock()
_POOL: dict[str, tuple[int, ThreadPoolExecutor]] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """The shared helper threads (created on first use, grown if more are asked for)."""
    with _POOL_LOCK:
        size, pool = _POOL.get("helpers", (0, None))
        if pool is None or size < workers:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="fusion-metrics")
            _POOL["helpers"] = (workers, pool)
        return pool


def _run_chunks(n_chunks: int, run: Callable[[int], None]) -> None:
    """Call ``run(chunk)`` for every chunk, on up to :func:`_thread_count` threads.

    The calling thread works too, and chunks are handed out one at a time, so a helper
    thread that starts late (a busy machine) only takes what is left: the call never waits
    for a thread that has not started. ``run`` must release the GIL (nogil kernels).
    """
    n_threads = min(n_chunks, _thread_count())
    if n_threads <= 1:
        for chunk in range(n_chunks):
            run(chunk)
        return
    next_chunk = itertools.count()  # next() on a count is atomic under the GIL
    lock = threading.Lock()
    all_done = threading.Event()
    finished = [0]
    errors: list[BaseException] = []

    def drain() -> None:
        while (chunk := next(next_chunk)) < n_chunks:
            try:
                run(chunk)
            except BaseException as exc:  # re-raised in the calling thread
                errors.append(exc)
            with lock:
                finished[0] += 1
                if finished[0] == n_chunks:
                    all_done.set()

    pool = _pool(n_threads - 1)
    for _ in range(n_threads - 1):
        pool.submit(drain)
    drain()
    all_done.wait()
    if errors:
        raise errors[0]


@njit(cache=True, nogil=True)
def _count_nan(values):
    bad = 0
    first = -1
    for i in range(values.shape[0]):
        if np.isnan(values[i]):
            if bad == 0:
                first = i
            bad += 1
    return bad, first


# --- kernels ---------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _sort_by_key(key, idx, n, stack):
    """Sort ``key[:n]`` ascending in place, applying the same moves to ``idx[:n]``.

    Quicksort (median of three, Hoare partition: equal keys split evenly, so long tie runs
    stay O(n log n)) with insertion sort below 16 items; ``stack`` holds 128 int64 (the
    smaller side is sorted first, so the depth is at most log2(n)).
    """
    lo = 0
    hi = n - 1
    top = 0
    while True:
        while hi - lo > 16:
            mid = (lo + hi) >> 1
            if key[mid] < key[lo]:
                key[mid], key[lo] = key[lo], key[mid]
                idx[mid], idx[lo] = idx[lo], idx[mid]
            if key[hi] < key[lo]:
                key[hi], key[lo] = key[lo], key[hi]
                idx[hi], idx[lo] = idx[lo], idx[hi]
            if key[hi] < key[mid]:
                key[hi], key[mid] = key[mid], key[hi]
                idx[hi], idx[mid] = idx[mid], idx[hi]
            pivot = key[mid]
            i = lo
            j = hi
            while i <= j:
                while key[i] < pivot:
                    i += 1
                while key[j] > pivot:
                    j -= 1
                if i <= j:
                    key[i], key[j] = key[j], key[i]
                    idx[i], idx[j] = idx[j], idx[i]
                    i += 1
                    j -= 1
            if j - lo < hi - i:
                stack[top] = i
                stack[top + 1] = hi
                hi = j
            else:
                stack[top] = lo
                stack[top + 1] = j
                lo = i
            top += 2
        for a in range(lo + 1, hi + 1):
            kv = key[a]
            iv = idx[a]
            b = a - 1
            while b >= lo and key[b] > kv:
                key[b + 1] = key[b]
                idx[b + 1] = idx[b]
                b -= 1
            key[b + 1] = kv
            idx[b + 1] = iv
        if top == 0:
            return
        top -= 2
        lo = stack[top]
        hi = stack[top + 1]


@njit(cache=True, nogil=True)
def _cut_below_top(key, n, k, best):
    """A score ``t`` such that every item that can rank within the first ``k`` slots (fewer
    than ``k`` items strictly above it) scores ``>= t``; needs ``n >= k``.

    ``t`` = the smallest of the maxima of the ``k`` interleaved slices ``key[b::k]``: ``k``
    items score ``>= t``, so the k-th largest score is ``>= t``. One branch-free, vectorised
    pass (an exact k-th largest costs a mispredicted branch per item); on random scores
    about twice ``k`` items pass. ``best`` is scratch of length >= k.
    """
    for b in range(k):
        best[b] = key[b]
    start = k
    while start + k <= n:
        for b in range(k):
            best[b] = max(best[b], key[start + b])
        start += k
    for b in range(n - start):
        best[b] = max(best[b], key[start + b])
    cut = best[0]
    for b in range(1, k):
        cut = min(cut, best[b])
    return cut


@njit(cache=True, nogil=True)
def _rank_by_counting(pool, n_pool, offset, key, items, n_items, above, ties):
    """For items ``items[:n_items]``: ``above[i]`` = ``offset`` + pool scores strictly higher
    than ``key[i]``, ``ties[i]`` = pool scores equal to it. The pool holds every score equal
    to the item's (itself included) and every higher one but ``offset`` of them. Branch-free
    counting vectorises, so for a few items it beats sorting the group."""
    for u in range(n_items):
        i = items[u]
        value = key[i]
        # NOTE: int64 counters: a comparison mask is already 64 bits wide per lane.
        higher = np.int64(0)
        at_least = np.int64(0)
        for q in range(n_pool):
            higher += np.int64(pool[q] > value)
            at_least += np.int64(pool[q] >= value)
        above[i] = offset + higher
        ties[i] = at_least - higher


@njit(cache=True, nogil=True)
def _rank_sorted(key, idx, n, stack, above, ties):
    """``above``/``ties`` of every item by one sort; ``key`` is overwritten."""
    for i in range(n):
        key[i] = -key[i]
        idx[i] = i
    _sort_by_key(key, idx, n, stack)
    r = 0
    while r < n:
        e = r + 1
        while e < n and key[e] == key[r]:
            e += 1
        for t in range(r, e):
            above[idx[t]] = r
            ties[idx[t]] = e - r
        r = e


@njit(cache=True, nogil=True)
def _fuse_rows(values, row_stride, column_stride, first, n, term_columns, term_weights, t_first,
               t_last, out):
    """``out[i]`` = fused score of row ``first + i`` (``i < n``) of the candidate whose terms
    are ``t_first:t_last``: ``sum_t values[column_t] * weight_t`` in term order, products
    rounded then added one term at a time (no reassociation, no fused multiply-add), exactly
    numpy's ``x0 * w0 + x1 * w1 + ...`` evaluated left to right."""
    if t_first == t_last:
        for i in range(n):
            out[i] = 0.0
        return
    # NOTE: unsigned indices skip numba's negative-index wraparound, which keeps the loops
    # vectorised (twice as fast on contiguous columns).
    step = np.uint64(row_stride)
    base = np.uint64(first * row_stride + term_columns[t_first] * column_stride)
    weight = term_weights[t_first]
    for i in range(n):
        out[i] = values[base + np.uint64(i) * step] * weight
    for t in range(t_first + 1, t_last):
        base = np.uint64(first * row_stride + term_columns[t] * column_stride)
        weight = term_weights[t]
        for i in range(n):
            out[i] += values[base + np.uint64(i) * step] * weight


@njit(cache=True, nogil=True)
def combine_rows(values, row_stride, column_stride, term_starts, term_columns, term_weights, out):
    """Fused scores of every candidate into ``out`` (candidates, rows), as :func:`_fuse_rows`
    (the metric kernel's own fusion, so both give the same bits)."""
    for c in range(out.shape[0]):
        _fuse_rows(values, row_stride, column_stride, 0, out.shape[1], term_columns,
                   term_weights, term_starts[c], term_starts[c + 1], out[c])


@njit(cache=True, nogil=True, error_model="numpy")
def _chunk_sums(values, row_stride, column_stride, term_starts, term_columns, term_weights,
                labels, offsets, g_first, g_last, kinds, ks, thresholds, log1p_gain,
                cum_discount, counting_max, sums, weights, used, nan_found):
    """Add groups ``g_first:g_last`` into ``sums`` (candidates, objectives, specs), ``weights``
    and ``used`` (objectives, specs). Each candidate's fused scores of a group are computed
    here (:func:`_fuse_rows`) into scratch. NaN fused scores: their count into
    ``nan_found[0]``, the candidate and row of the first into ``nan_found[1:3]``."""
    n_candidates = term_starts.shape[0] - 1
    n_objectives = labels.shape[1]
    n_specs = kinds.shape[0]
    need_ranks = False
    k_max = 0
    for s in range(n_specs):
        if kinds[s] == _GAUC:
            need_ranks = True
        else:
            k_max = max(k_max, ks[s])
    width = 1
    for g in range(g_first, g_last):
        width = max(width, offsets[g + 1] - offsets[g])
    key = np.empty(width)
    idx = np.empty(width, dtype=np.int64)
    stack = np.empty(128, dtype=np.int64)
    above = np.empty(width, dtype=np.int64)
    ties = np.empty(width, dtype=np.int64)
    top_items = np.empty(width, dtype=np.int64)
    top_key = np.empty(width)
    bottom_key = np.empty(width)
    share = np.empty(width)
    positive_items = np.empty(width, dtype=np.int64)
    low_positives = np.empty(width, dtype=np.int64)
    best = np.empty(max(1, min(k_max, _SELECT_K_MAX)))
    gains = np.empty((width, n_objectives))
    raw = np.empty((width, n_objectives))
    positive = np.empty((width, n_objectives))
    needed = np.empty(width, dtype=np.int64)
    needed_items = np.empty(width, dtype=np.int64)
    # Per objective, a mask (-1: all bits set) for each of the group's positive items, in
    # positive_items order: AND selects a rank (int64 multiplies have no vector form in AVX2).
    positive_of = np.zeros((n_objectives, width), dtype=np.int64)
    twice_rank = np.empty(width, dtype=np.int64)
    n_pos = np.empty(n_objectives)
    ideal = np.zeros((n_objectives, n_specs))
    active = np.zeros((n_objectives, n_specs), dtype=np.bool_)
    rank_sum = np.empty(n_objectives)
    gained = np.empty((n_objectives, n_specs))

    for g in range(g_first, g_last):
        start = offsets[g]
        n = offsets[g + 1] - start
        for j in range(n_objectives):
            n_pos[j] = 0.0
        n_positive_items = 0
        for i in range(n):
            any_positive = False
            any_label = False
            for j in range(n_objectives):
                label = labels[start + i, j]
                value = np.float64(label)
                raw[i, j] = value
                # log1p(0) = 0: most labels are 0, skip the call for them.
                gains[i, j] = np.log1p(value) if log1p_gain[j] and value != 0.0 else value
                is_positive = label > thresholds[j]
                positive[i, j] = np.float64(is_positive)
                n_pos[j] += positive[i, j]
                any_positive |= is_positive
                any_label |= value != 0.0
            # Items with no label and no positive add nothing to ndcg/top: their ranks are
            # not needed (they still count in other items' ranks).
            needed[i] = any_positive or any_label
            # Branch-free compaction: write always, advance only for a positive.
            positive_items[n_positive_items] = i
            for j in range(n_objectives):
                positive_of[j, n_positive_items] = -np.int64(positive[i, j] != 0.0)
            n_positive_items += np.int64(any_positive)

        # Which groups count, and the ideal DCG: once per group, shared by all candidates.
        for j in range(n_objectives):
            n_ideal = 0
            for s in range(n_specs):
                if kinds[s] == _NDCG:
                    # Only non-zero gains add to the ideal DCG; labels are mostly zero.
                    for i in range(n):
                        key[n_ideal] = -gains[i, j]
                        n_ideal += np.int64(gains[i, j] > 0.0)
                    _sort_by_key(key, idx, n_ideal, stack)
                    break
            for s in range(n_specs):
                kind = kinds[s]
                if kind == _GAUC:
                    ok = n_pos[j] > 0.0 and n_pos[j] < n
                    weight = np.float64(n)
                elif kind == _NDCG:
                    total = 0.0
                    for r in range(min(n_ideal, ks[s])):
                        total += -key[r] * (cum_discount[r + 1] - cum_discount[r])
                    ideal[j, s] = total
                    ok = total > 0.0
                    weight = 1.0
                else:
                    ok = True
                    weight = 1.0
                active[j, s] = ok
                if ok:
                    weights[j, s] += weight
                    used[j, s] += 1
        if not need_ranks:
            n_positive_items = 0

        for c in range(n_candidates):
            _fuse_rows(values, row_stride, column_stride, start, n, term_columns, term_weights,
                       term_starts[c], term_starts[c + 1], key)
            n_nan = 0
            for i in range(n):
                n_nan += np.int64(key[i] != key[i])
            if n_nan:  # reported by the caller; NaN has no rank
                if nan_found[0] == 0:
                    nan_found[1] = c
                    for i in range(n):
                        if key[i] != key[i]:
                            nan_found[2] = start + i
                            break
                nan_found[0] += n_nan
                continue
            # Only two kinds of items need their rank: those that can land in the first k_max
            # slots (ndcg/top) -- all score >= cut, and their ranks among the items >= cut are
            # their ranks in the group -- and, for gauc, the positives below the cut.
            n_top = 0
            cut = np.inf
            pool = key  # the scores a positive below the cut is counted against
            n_pool = n
            if k_max > 0:
                cut = -np.inf
                if n > k_max and k_max <= _SELECT_K_MAX:
                    cut = _cut_below_top(key, n, k_max, best)
                # Branch-free partition: every item is written to both sides, and only the
                # side it belongs to advances.
                n_bottom = 0
                for i in range(n):
                    is_top = np.int64(key[i] >= cut)
                    top_items[n_top] = i
                    top_key[n_top] = key[i]
                    bottom_key[n_bottom] = key[i]
                    n_top += is_top
                    n_bottom += 1 - is_top
                # The same cut again over the survivors narrows them to about k_max; with
                # about 2 k_max survivors (random scores) it costs more than it saves.
                if n_top > 2 * k_max + 1 and k_max <= _SELECT_K_MAX:
                    cut = _cut_below_top(top_key, n_top, k_max, best)
                    kept = 0
                    for u in range(n_top):
                        is_top = np.int64(top_key[u] >= cut)
                        top_items[kept] = top_items[u]
                        bottom_key[n_bottom] = top_key[u]
                        top_key[kept] = top_key[u]
                        kept += is_top
                        n_bottom += 1 - is_top
                    n_top = kept
                pool = bottom_key
                n_pool = n_bottom
            n_low = 0
            for u in range(n_positive_items):
                i = positive_items[u]
                low_positives[n_low] = i
                n_low += np.int64(key[i] < cut)
            n_needed = 0
            for u in range(n_top):
                i = top_items[u]
                needed_items[n_needed] = i
                n_needed += needed[i]
            if n_needed * n_top + n_low * n_pool <= counting_max * n:
                _rank_by_counting(top_key, n_top, 0, key, needed_items, n_needed, above, ties)
                # Every item above the cut is above a positive below it.
                _rank_by_counting(pool, n_pool, n_top, key, low_positives, n_low, above, ties)
            else:
                _rank_sorted(key, idx, n, stack, above, ties)

            # gauc: the positives' mean ascending ranks; a tie block shares the mean rank
            # n - above - (ties - 1) / 2. Summed doubled, in integers: exact in any order,
            # so the loops vectorise.
            for u in range(n_positive_items):
                i = positive_items[u]
                twice_rank[u] = 2 * (n - above[i]) - ties[i] + 1
            for j in range(n_objectives):
                twice = np.int64(0)
                for u in range(n_positive_items):
                    twice += positive_of[j, u] & twice_rank[u]
                rank_sum[j] = twice * 0.5
            # ndcg/top: item i's tie block covers positions above[i] .. above[i] + ties[i] - 1
            # (0-based); it gets 1 / ties[i] of the discounts (slots) of those within K.
            n_within = 0
            for u in range(n_needed):
                i = needed_items[u]
                top_items[n_within] = i
                n_within += np.int64(above[i] < k_max)
            for s in range(n_specs):
                kind = kinds[s]
                if kind == _GAUC:
                    continue
                k = ks[s]
                for u in range(n_within):
                    i = top_items[u]
                    first = min(above[i], k)
                    last = min(above[i] + ties[i], k)
                    if kind == _NDCG:
                        share[u] = (cum_discount[last] - cum_discount[first]) / ties[i]
                    else:
                        share[u] = (last - first) / ties[i]
                source = gains if kind == _NDCG else raw
                for j in range(n_objectives):
                    total = 0.0
                    for u in range(n_within):
                        total += source[top_items[u], j] * share[u]
                    gained[j, s] = total
            for j in range(n_objectives):
                for s in range(n_specs):
                    if not active[j, s]:
                        continue
                    kind = kinds[s]
                    if kind == _GAUC:
                        p = n_pos[j]
                        auc = (rank_sum[j] - p * (p + 1.0) * 0.5) / (p * (n - p))
                        sums[c, j, s] += n * auc
                    elif kind == _NDCG:
                        sums[c, j, s] += gained[j, s] / ideal[j, s]
                    else:
                        sums[c, j, s] += gained[j, s]


@njit(cache=True, nogil=True)
def _sorted_rank_sum(sorted_scores, sorted_positives):
    """Sum of the positives' average ascending ranks, scores sorted ascending."""
    n = sorted_scores.shape[0]
    rank_sum = 0.0
    r = 0
    while r < n:
        e = r + 1
        while e < n and sorted_scores[e] == sorted_scores[r]:
            e += 1
        block_pos = 0.0
        for t in range(r, e):
            block_pos += sorted_positives[t]
        rank_sum += block_pos * (r + e + 1) * 0.5
        r = e
    return rank_sum

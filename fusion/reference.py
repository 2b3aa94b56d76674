"""Two independent implementations of the ranking metrics, to check and time the kernel.

- :func:`sql_metrics`: one DuckDB SQL query with window functions over a table of
  (group, fused score, labels); values are bound parameters, never spliced into the text.
- :func:`sklearn_loop_metrics`: a Python loop over groups calling scikit-learn's
  ``roc_auc_score`` and ``ndcg_score(ignore_ties=False)`` (top@K by brute force).
  scikit-learn is a test and benchmark dependency, imported only when this is called.

Both take the arguments of :func:`fusion.metrics.grouped_metric_sums` for ONE candidate and
accept every metric name, including the global ``"auc"``. They are slow by design (the
benchmark reports how slow); use :mod:`fusion.evaluate` for real work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import duckdb
import numpy as np
import pyarrow as pa

from .errors import InvalidValueError
from .metrics import MetricSpec, parse_metrics

__all__ = ["ReferenceMetrics", "sklearn_loop_metrics", "sql_metrics"]


class ReferenceMetrics(NamedTuple):
    """Metric values of one candidate.

    values : ndarray of float64, shape (objectives, specs); NaN where no group counts.
    groups_used : ndarray of int64, shape (objectives, specs); for ``auc`` 1 if defined else 0.
    """

    values: np.ndarray
    groups_used: np.ndarray


def _inputs(fused, labels, group_offsets, specs, positive_thresholds, log1p_gain):
    specs = parse_metrics(specs)
    fused = np.asarray(fused, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float32)
    offsets = np.asarray(group_offsets, dtype=np.int64)
    if fused.ndim != 1 or labels.ndim != 2 or labels.shape[0] != fused.shape[0]:
        raise InvalidValueError(
            f"reference metrics take fused (rows,) and labels (rows, objectives), got shapes "
            f"{fused.shape} and {labels.shape}")
    if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != fused.shape[0] or np.any(
            np.diff(offsets) <= 0):
        raise InvalidValueError("group_offsets must rise strictly from 0 to the row count")
    n_objectives = labels.shape[1]
    thresholds = np.asarray(positive_thresholds, dtype=np.float64).reshape(n_objectives)
    log1p = np.asarray(log1p_gain, dtype=bool).reshape(n_objectives)
    return specs, fused, labels, offsets, thresholds, log1p


# --- DuckDB --------------------------------------------------------------------------------
def _metric_sql(n_objectives: int, specs: Sequence[MetricSpec]) -> str:
    """The query text. Only generated identifiers (l0, gain0, ...) and parameter markers
    ($k0, $t0, ...) appear in it; every value is bound."""
    objectives = range(n_objectives)
    base = ["g", "s"] + [f"l{j}" for j in objectives]
    for j in objectives:
        base.append(f"CAST(l{j} > CAST($t{j} AS FLOAT) AS DOUBLE) AS p{j}")
        base.append(f"CASE WHEN $log{j} THEN ln(1 + CAST(l{j} AS DOUBLE)) "
                    f"ELSE CAST(l{j} AS DOUBLE) END AS gain{j}")
    windows = [
        "row_number() OVER by_score AS pos",
        "rank() OVER by_score AS first_pos",
        "CAST(count(*) OVER (PARTITION BY g, s) AS DOUBLE) AS tied",
        "CAST(count(*) OVER (PARTITION BY g) AS DOUBLE) AS n",
    ]
    wants_auc = any(spec.name == "auc" for spec in specs)
    if wants_auc:  # a global sort: only when asked for
        windows += ["rank() OVER (ORDER BY s) AS global_first",
                    "CAST(count(*) OVER (PARTITION BY s) AS DOUBLE) AS global_tied"]
    for j in objectives:
        windows += [
            f"sum(gain{j}) OVER (PARTITION BY g, s) AS tied_gain{j}",
            f"sum(CAST(l{j} AS DOUBLE)) OVER (PARTITION BY g, s) AS tied_label{j}",
            f"sum(p{j}) OVER (PARTITION BY g) AS n_pos{j}",
            f"row_number() OVER (PARTITION BY g ORDER BY gain{j} DESC) AS ideal_pos{j}",
        ]
    # Per group. Tie blocks: every row of a block adds the block's mean gain (label) times the
    # discount (1) of its own position; the positions of a block are the same set whatever
    # order row_number() gives its rows, so the sum is sklearn's tie-averaged DCG (top).
    group = ["g", "any_value(n) AS n"]
    for j in objectives:
        group += [
            f"any_value(n_pos{j}) AS n_pos{j}",
            f"sum(p{j} * (n - first_pos + 1 - (tied - 1) / 2.0)) AS rank_sum{j}",
        ]
        if wants_auc:
            group.append(
                f"sum(p{j} * (global_first + (global_tied - 1) / 2.0)) AS global_rank_sum{j}")
        for s, spec in enumerate(specs):
            if spec.name == "ndcg":
                group += [
                    f"sum(CASE WHEN pos <= $k{s} THEN tied_gain{j} / tied / log2(pos + 1) "
                    f"ELSE 0 END) AS dcg{j}_{s}",
                    f"sum(CASE WHEN ideal_pos{j} <= $k{s} THEN gain{j} / log2(ideal_pos{j} + 1)"
                    f" ELSE 0 END) AS idcg{j}_{s}",
                ]
            elif spec.name == "top":
                group.append(f"sum(CASE WHEN pos <= $k{s} THEN tied_label{j} / tied ELSE 0 END)"
                             f" AS top{j}_{s}")
    final = []
    for j in objectives:
        for s, spec in enumerate(specs):
            if spec.name == "gauc":
                both = f"n_pos{j} > 0 AND n_pos{j} < n"
                final += [
                    f"sum(n * (rank_sum{j} - n_pos{j} * (n_pos{j} + 1) / 2.0) "
                    f"/ (n_pos{j} * (n - n_pos{j}))) FILTER (WHERE {both}) "
                    f"/ sum(n) FILTER (WHERE {both}) AS v{j}_{s}",
                    f"count(*) FILTER (WHERE {both}) AS u{j}_{s}",
                ]
            elif spec.name == "ndcg":
                final += [
                    f"avg(dcg{j}_{s} / idcg{j}_{s}) FILTER (WHERE idcg{j}_{s} > 0) AS v{j}_{s}",
                    f"count(*) FILTER (WHERE idcg{j}_{s} > 0) AS u{j}_{s}",
                ]
            elif spec.name == "top":
                final += [f"avg(top{j}_{s}) AS v{j}_{s}", f"count(*) AS u{j}_{s}"]
            else:
                positives, rows = f"sum(n_pos{j})", "sum(n)"
                defined = f"{positives} > 0 AND {positives} < {rows}"
                final += [
                    f"CASE WHEN {defined} THEN (sum(global_rank_sum{j}) - {positives} * "
                    f"({positives} + 1) / 2.0) / ({positives} * ({rows} - {positives})) END "
                    f"AS v{j}_{s}",
                    f"CAST({defined} AS BIGINT) AS u{j}_{s}",
                ]
    return (
        f"WITH base AS (SELECT {', '.join(base)} FROM impressions), "
        f"ranked AS (SELECT base.*, {', '.join(windows)} FROM base "
        "WINDOW by_score AS (PARTITION BY g ORDER BY s DESC)), "
        f"per_group AS (SELECT {', '.join(group)} FROM ranked GROUP BY g) "
        f"SELECT {', '.join(final)} FROM per_group"
    )


def sql_metrics(
    fused: np.ndarray,
    labels: np.ndarray,
    group_offsets: np.ndarray,
    *,
    specs: Sequence[str | MetricSpec],
    positive_thresholds: np.ndarray,
    log1p_gain: np.ndarray,
    threads: int | None = None,
) -> ReferenceMetrics:
    """The metrics of one candidate computed by a single DuckDB query.

    Parameters
    ----------
    fused : ndarray of float64, shape (rows,)
    labels, group_offsets, specs, positive_thresholds, log1p_gain
        As in :func:`fusion.metrics.grouped_metric_sums`; ``specs`` may include ``"auc"``.
    threads : int or None
        DuckDB worker threads (None: DuckDB's default, every core).

    Notes
    -----
    Tie rules as the kernel: ``rank()`` gives a tie block's first position and
    ``count(*) OVER (PARTITION BY group, score)`` its size; gauc uses the block's mean rank,
    ndcg/top give each row of a block the block's mean gain/label times its own position's
    discount within K. ``log1p`` is written ``ln(1 + label)`` (DuckDB has no log1p), which
    agrees with it to ~1e-16 for labels >= 0.
    """
    specs, fused, labels, offsets, thresholds, log1p = _inputs(
        fused, labels, group_offsets, specs, positive_thresholds, log1p_gain)
    n_objectives = labels.shape[1]
    group = np.repeat(np.arange(offsets.shape[0] - 1, dtype=np.int64), np.diff(offsets))
    table = pa.table({"g": group, "s": fused,
                      **{f"l{j}": labels[:, j] for j in range(n_objectives)}})
    params: dict[str, object] = {}
    for j in range(n_objectives):
        params[f"t{j}"] = float(thresholds[j])
        params[f"log{j}"] = bool(log1p[j])
    for s, spec in enumerate(specs):
        if spec.k is not None:
            params[f"k{s}"] = spec.k
    # The query reads only the registered table: no file or network access.
    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    try:
        if threads is not None:
            con.execute("SET threads = ?", [int(threads)])
        con.register("impressions", table)
        row = con.execute(_metric_sql(n_objectives, specs), params).fetchone()
    finally:
        con.close()
    values = np.array([np.nan if v is None else v for v in row[0::2]], dtype=np.float64)
    used = np.array(row[1::2], dtype=np.int64)
    shape = (n_objectives, len(specs))
    return ReferenceMetrics(values.reshape(shape), used.reshape(shape))


# --- scikit-learn --------------------------------------------------------------------------
def _tie_averaged_top(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Expected label sum in the first k slots over all orders of tied items (brute force:
    an item with ``a`` items above it and ``t`` tied with it fills ``clip(k - a, 0, t)`` of
    its block's ``t`` shared slots)."""
    total = 0.0
    for i in range(scores.shape[0]):
        above = np.count_nonzero(scores > scores[i])
        tied = np.count_nonzero(scores == scores[i])
        total += labels[i] * min(max(k - above, 0), tied) / tied
    return total


def sklearn_loop_metrics(
    fused: np.ndarray,
    labels: np.ndarray,
    group_offsets: np.ndarray,
    *,
    specs: Sequence[str | MetricSpec],
    positive_thresholds: np.ndarray,
    log1p_gain: np.ndarray,
) -> ReferenceMetrics:
    """The metrics of one candidate by scikit-learn, one call per group and objective.

    Same arguments as :func:`sql_metrics`. gauc: ``roc_auc_score`` per group with both
    classes; ndcg@K: ``ndcg_score(ignore_ties=False, k=K)`` per group with a positive gain
    (scikit-learn refuses one-item groups: their NDCG is 1, DCG = IDCG); top@K: brute-force
    tie averaging; auc: ``roc_auc_score`` over all rows (NaN with one class).

    Raises
    ------
    ImportError
        scikit-learn is not installed (it is a test and benchmark dependency).
    """
    try:
        from sklearn.metrics import ndcg_score, roc_auc_score
    except ImportError:
        raise ImportError(
            "sklearn_loop_metrics needs scikit-learn, a test and benchmark dependency: "
            "pip install -r requirements-dev.txt") from None
    specs, fused, labels, offsets, thresholds, log1p = _inputs(
        fused, labels, group_offsets, specs, positive_thresholds, log1p_gain)
    n_objectives = labels.shape[1]
    shape = (n_objectives, len(specs))
    sums, weights = np.zeros(shape), np.zeros(shape)
    used = np.zeros(shape, dtype=np.int64)
    raw = labels.astype(np.float64)
    positive = labels > thresholds.astype(np.float32)
    gains = np.where(log1p, np.log1p(raw), raw)
    for g in range(offsets.shape[0] - 1):
        rows = slice(offsets[g], offsets[g + 1])
        scores = fused[rows]
        n = scores.shape[0]
        for j in range(n_objectives):
            for s, spec in enumerate(specs):
                if spec.name == "gauc":
                    y = positive[rows, j]
                    if 0 < np.count_nonzero(y) < n:
                        sums[j, s] += n * roc_auc_score(y, scores)
                        weights[j, s] += n
                        used[j, s] += 1
                elif spec.name == "ndcg":
                    gain = gains[rows, j]
                    if np.any(gain > 0):
                        sums[j, s] += 1.0 if n == 1 else ndcg_score(
                            gain[np.newaxis], scores[np.newaxis], k=spec.k, ignore_ties=False)
                        weights[j, s] += 1
                        used[j, s] += 1
                elif spec.name == "top":
                    sums[j, s] += _tie_averaged_top(raw[rows, j], scores, spec.k)
                    weights[j, s] += 1
                    used[j, s] += 1
    values = np.where(weights > 0, sums / np.where(weights > 0, weights, 1.0), np.nan)
    for s, spec in enumerate(specs):
        if spec.name == "auc":
            for j in range(n_objectives):
                defined = 0 < np.count_nonzero(positive[:, j]) < positive.shape[0]
                values[j, s] = roc_auc_score(positive[:, j], fused) if defined else np.nan
                used[j, s] = int(defined)
    return ReferenceMetrics(values, used)

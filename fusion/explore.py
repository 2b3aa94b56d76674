"""Analyst statistics of prediction logs: correlations, calibration, single-score rankings.

Plain numpy/pandas results (no plotting): the dashboard draws them; the bundled sample's
README lists them.

- :func:`within_request_spearman`: how scores and labels co-rank inside a request.
- :func:`reliability_curve`, :func:`expected_calibration_error`: does a score mean what it
  says (a probability for binary objectives, label units for graded ones)?
- :func:`score_label_matrix`, :func:`single_score_gauc`: what ranking by one objective's
  score alone does to every label; the off-diagonal cost is how much the objectives conflict.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .errors import FusionError
from .evaluate import evaluate_many
from .logs import LogSet
from .metrics import parse_metric

__all__ = [
    "expected_calibration_error",
    "reliability_curve",
    "score_label_matrix",
    "single_score_gauc",
    "within_request_spearman",
]

GRADED_DEFAULT_METRIC = "ndcg@10"


def _check_logs(logs: object) -> None:
    if not isinstance(logs, LogSet):
        raise FusionError(
            f"logs must be a LogSet (see fusion.load_logs), got {type(logs).__name__}")


# --- correlations ------------------------------------------------------------------------------
def _doubled_centred_ranks(values: np.ndarray, group_offsets: np.ndarray,
                           group_of_row: np.ndarray) -> np.ndarray:
    """``2 * average_rank - (n_g + 1)`` per row: an exact integer (ties share their mean rank).

    Rows are sorted by (group, value) with one lexsort; a run of equal values in a group
    covers sorted positions ``first..last``, whose average 1-based rank within the group is
    ``(first + last) / 2 - start_g + 1``. Doubling keeps it integral; centring on the group's
    mean rank ``(n_g + 1) / 2`` makes per-group sums of products covariances.
    """
    n = values.shape[0]
    order = np.lexsort((values, group_of_row))
    ordered, groups = values[order], group_of_row[order]
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (ordered[1:] != ordered[:-1]) | (groups[1:] != groups[:-1])
    run_starts = np.flatnonzero(new_run)
    run_ends = np.append(run_starts[1:], n) - 1
    run = np.cumsum(new_run) - 1
    starts = group_offsets[:-1][groups]
    sizes = (group_offsets[1:] - group_offsets[:-1])[groups]
    doubled = np.empty(n, dtype=np.int32)  # |value| < group size
    doubled[order] = run_starts[run] + run_ends[run] - 2 * starts + 1 - sizes
    return doubled


def within_request_spearman(logs: LogSet) -> pd.DataFrame:
    """Spearman correlation of every pair of score and label columns, within requests.

    For each request, the Spearman correlation of two columns is the Pearson correlation of
    their ranks inside the request (tied values share their average rank, as in
    ``scipy.stats.spearmanr``). The result averages it over requests, unweighted.

    Parameters
    ----------
    logs : LogSet

    Returns
    -------
    DataFrame, shape (2 * objectives, 2 * objectives)
        Index and columns are the score columns then the label columns, by source column
        name (``pred_click``, ..., ``label_click``, ...). Symmetric; the diagonal is 1
        (NaN for a column that is constant in every request).

    Notes
    -----
    A request where either column is constant (every row tied, including one-row
    requests) has no defined correlation and is skipped for that pair; a pair with no
    request left is NaN. Rare labels are therefore averaged over the few requests that hold
    at least one positive and one negative.
    """
    _check_logs(logs)
    offsets = logs.group_offsets
    group_of_row = np.repeat(np.arange(logs.n_requests, dtype=np.int64), np.diff(offsets))
    starts = offsets[:-1]
    columns = [o.score_column for o in logs.schema.objectives]
    columns += [o.label_column for o in logs.schema.objectives]
    matrices = [(logs.scores, j) for j in range(len(logs.objectives))]
    matrices += [(logs.labels, j) for j in range(len(logs.objectives))]
    ranks = [_doubled_centred_ranks(matrix[:, j], offsets, group_of_row) for matrix, j in matrices]
    # Integer arithmetic: doubled centred ranks are exact, so constant columns give exactly 0.
    spread = [np.add.reduceat(np.multiply(r, r, dtype=np.int64), starts) for r in ranks]
    k = len(columns)
    result = np.eye(k)
    for a in range(k):
        if not np.any(spread[a] > 0):
            result[a, a] = np.nan
        for b in range(a + 1, k):
            used = (spread[a] > 0) & (spread[b] > 0)
            if not used.any():
                result[a, b] = result[b, a] = np.nan
                continue
            products = np.multiply(ranks[a], ranks[b], dtype=np.int64)
            covariance = np.add.reduceat(products, starts)[used]
            correlation = covariance / np.sqrt(spread[a][used].astype(np.float64) * spread[b][used])
            result[a, b] = result[b, a] = float(correlation.mean())
    return pd.DataFrame(result, index=pd.Index(columns), columns=pd.Index(columns))


# --- calibration -------------------------------------------------------------------------------
def reliability_curve(logs: LogSet, objective: str, bins: int = 10) -> pd.DataFrame:
    """Mean score against the observed outcome, per bin of the objective's score.

    Parameters
    ----------
    logs : LogSet
    objective : str
    bins : int
        Number of equal-count bins (score quantiles; deciles by default).

    Returns
    -------
    DataFrame, one row per non-empty bin, by increasing score
        ``bin`` (0-based quantile bin), ``score_low``, ``score_high`` (the smallest and
        largest score in the bin), ``mean_score``, ``positive_rate`` (share of rows with
        label > the objective's positive threshold), ``mean_label``, ``count``.

    Notes
    -----
    Bin edges are the score quantiles; a row belongs to the bin whose interval
    ``[edge_i, edge_{i+1})`` holds its score (the last bin is closed). Equal scores always
    share a bin, so heavily tied scores give fewer (merged) or unequal bins; empty bins are
    left out. For a binary objective ``positive_rate == mean_label`` and a calibrated score
    has ``mean_score`` close to it; for a graded objective compare ``mean_score`` with
    ``mean_label`` (both in label units, e.g. seconds).
    """
    j, scores, labels = _objective_columns(logs, objective)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise FusionError(f"bins must be a whole number >= 1, got {bins!r}")
    edges = np.quantile(scores, np.linspace(0.0, 1.0, int(bins) + 1))
    index = np.searchsorted(edges[1:-1], scores, side="right")
    count = np.bincount(index, minlength=bins)
    positive = labels > np.float64(np.float32(logs.schema.objectives[j].positive_threshold))
    present = np.flatnonzero(count)
    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(index, weights=values, minlength=bins)[present] / count[present]

    return pd.DataFrame({
        "bin": present,
        "score_low": _per_bin(np.minimum, scores, index, bins)[present],
        "score_high": _per_bin(np.maximum, scores, index, bins)[present],
        "mean_score": mean(scores),
        "positive_rate": mean(positive),
        "mean_label": mean(labels),
        "count": count[present],
    })


def expected_calibration_error(logs: LogSet, objective: str, bins: int = 10) -> float:
    """Count-weighted mean gap between mean score and observed outcome over the bins.

    ``sum_b (count_b / rows) * |mean_score_b - observed_b|`` over the bins of
    :func:`reliability_curve`, where ``observed`` is the positive rate for a binary
    objective and the mean label for a graded one (so it is in label units, e.g. seconds).
    0 for a perfectly calibrated score.
    """
    curve = reliability_curve(logs, objective, bins)
    binary = logs.schema.objective(objective).kind == "binary"
    observed = curve["positive_rate" if binary else "mean_label"].to_numpy()
    gaps = np.abs(curve["mean_score"].to_numpy() - observed)
    return float(np.sum(curve["count"].to_numpy() * gaps) / curve["count"].sum())


def _objective_columns(logs: LogSet, objective: str) -> tuple[int, np.ndarray, np.ndarray]:
    _check_logs(logs)
    j = logs.objective_index(objective)
    return j, logs.scores[:, j].astype(np.float64), logs.labels[:, j].astype(np.float64)


def _per_bin(ufunc: np.ufunc, values: np.ndarray, index: np.ndarray, bins: int) -> np.ndarray:
    out = np.full(bins, np.inf if ufunc is np.minimum else -np.inf)
    ufunc.at(out, index, values)
    return out


# --- single-score rankings ---------------------------------------------------------------------
def score_label_matrix(
    logs: LogSet,
    metrics: Mapping[str, str] | None = None,
    default: str = "gauc",
) -> pd.DataFrame:
    """Each label's metric when requests are ranked by one objective's score alone.

    Parameters
    ----------
    logs : LogSet
    metrics : mapping of objective -> metric name, optional
        The metric of each label (column). None uses ``"ndcg@10"`` for graded objectives.
        Objectives not named get ``default``.
    default : str
        Metric of the labels ``metrics`` does not name (default ``"gauc"``).

    Returns
    -------
    DataFrame, shape (objectives, objectives)
        Row ``o`` (index name ``ranked_by``): requests ranked by ``o``'s score (the sum
        formula with weight 1 on ``o``, 0 elsewhere); column ``o'`` (columns name
        ``label``): the metric of ``o'``'s label, as :func:`fusion.evaluate` computes it
        (tie-aware; see :mod:`fusion.metrics`). ``diagonal - column`` is what ranking by
        another objective's score costs a label.

    Raises
    ------
    SchemaError
        ``metrics`` names an objective the logs do not have.
    MetricError
        A metric name is malformed.
    """
    _check_logs(logs)
    if metrics is None:
        metrics = {o.name: GRADED_DEFAULT_METRIC
                   for o in logs.schema.objectives if o.kind == "graded"}
    for name in metrics:
        logs.objective_index(name)
    chosen = {o: str(parse_metric(metrics.get(o, default))) for o in logs.objectives}
    table = _ranked_by_each(logs, sorted(set(chosen.values())))
    values = {label: table[f"{label}:{metric}"].to_numpy() for label, metric in chosen.items()}
    frame = pd.DataFrame(values, index=pd.Index(logs.objectives, name="ranked_by"))
    frame.columns.name = "label"
    return frame


def single_score_gauc(logs: LogSet) -> dict[str, float]:
    """Each objective's score's GAUC on its own label (groups = requests).

    Returns
    -------
    dict of objective -> float
        NaN for an objective whose every request holds only positives or only negatives.
    """
    _check_logs(logs)
    table = _ranked_by_each(logs, ["gauc"])
    return {o: float(table.loc[o, f"{o}:gauc"]) for o in logs.objectives}


def _ranked_by_each(logs: LogSet, metrics: list[str]) -> pd.DataFrame:
    """``evaluate_many`` of the one-hot sum formulas, one row per objective (the index)."""
    objectives = list(logs.objectives)
    one_hot = pd.DataFrame(np.eye(len(objectives)), index=objectives, columns=objectives)
    return evaluate_many(logs, "sum", weights=one_hot, metrics=metrics)

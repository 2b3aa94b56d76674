"""Analyst statistics against simple oracles: scipy per request, hand-computed bins, evaluate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

import fusion
from fusion import explore
from fusion.evaluate import evaluate
from fusion.formulas import Formula

from .conftest import make_log_frame


def _load(tmp_path: Path, frame: pd.DataFrame, name: str = "logs.parquet") -> fusion.LogSet:
    path = tmp_path / name
    frame.to_parquet(path)
    return fusion.load_logs(path)


@pytest.fixture
def tied_logs(tmp_path: Path) -> fusion.LogSet:
    # One-row requests, rounded scores (ties) and rare labels (constant requests).
    frame = make_log_frame(60, seed=7, min_size=1, max_size=25,
                           objectives=("click", "dwell", "share"))
    frame["pred_click"] = np.round(frame["pred_click"], 1)
    return _load(tmp_path, frame)


# --- within-request Spearman ------------------------------------------------------------------
def _spearman_oracle(logs: fusion.LogSet) -> np.ndarray:
    columns = np.hstack([logs.scores, logs.labels]).astype(np.float64)
    k = columns.shape[1]
    sums, counts = np.zeros((k, k)), np.zeros((k, k))
    offsets = logs.group_offsets
    for start, stop in zip(offsets[:-1], offsets[1:]):
        block = columns[start:stop]
        varying = np.flatnonzero((block != block[0]).any(axis=0))
        if len(varying) < 2:
            counts[varying, varying] += 1  # a varying column correlates 1 with itself
            sums[varying, varying] += 1
            continue
        rho = np.atleast_2d(spearmanr(block[:, varying]).statistic)
        if len(varying) == 2:
            rho = np.array([[1.0, rho[0, 0]], [rho[0, 0], 1.0]])
        sums[np.ix_(varying, varying)] += rho
        counts[np.ix_(varying, varying)] += 1
    with np.errstate(invalid="ignore"):
        return sums / counts


def test_spearman_equals_scipy_per_request_averaged(tied_logs: fusion.LogSet) -> None:
    got = explore.within_request_spearman(tied_logs)
    expected = _spearman_oracle(tied_logs)
    names = ["pred_click", "pred_dwell", "pred_share", "label_click", "label_dwell", "label_share"]
    assert list(got.index) == names and list(got.columns) == names
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got.to_numpy(), got.to_numpy().T)
    assert np.all(np.diag(got.to_numpy()) == 1.0)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=8), data=st.data())
def test_spearman_equals_scipy_with_heavy_ties_and_tiny_requests(tmp_path_factory, sizes, data
                                                                 ) -> None:
    n = sum(sizes)
    values = st.lists(st.integers(0, 2), min_size=n, max_size=n)
    frame = pd.DataFrame({
        "request_id": np.repeat(np.arange(len(sizes)), sizes),
        "user_id": 1,
        "item_id": np.arange(n),
        "pred_click": np.array(data.draw(values), dtype=float) / 2,
        "label_click": np.array(data.draw(values)) == 2,
        "pred_like": np.array(data.draw(values), dtype=float) / 2,
        "label_like": np.array(data.draw(values), dtype=float),
    }).astype({"label_click": int})
    logs = _load(tmp_path_factory.mktemp("spearman"), frame)
    got = explore.within_request_spearman(logs).to_numpy()
    np.testing.assert_allclose(got, _spearman_oracle(logs), rtol=0, atol=1e-12)


def test_spearman_of_a_column_constant_in_every_request_is_nan(tmp_path: Path) -> None:
    frame = make_log_frame(20, seed=1, objectives=("click", "like"))
    frame["label_like"] = 0
    got = explore.within_request_spearman(_load(tmp_path, frame))
    assert got["label_like"].isna().all() and got.loc["label_like"].isna().all()
    assert got.drop(index="label_like", columns="label_like").notna().all().all()


def test_spearman_skips_only_the_requests_where_a_column_is_constant(tmp_path: Path) -> None:
    # Request a: perfectly concordant; request b: perfectly discordant but the label is
    # constant there, so only a counts for the score-label pair; both count score-score.
    frame = pd.DataFrame({
        "request_id": ["a"] * 3 + ["b"] * 3,
        "user_id": 1,
        "item_id": [1, 2, 3, 4, 5, 6],
        "pred_click": [0.1, 0.2, 0.3, 0.3, 0.2, 0.1],
        "label_click": [0, 0, 1, 1, 1, 1],
        "pred_like": [0.1, 0.2, 0.3, 0.1, 0.2, 0.3],
        "label_like": [0, 1, 1, 0, 0, 1],
    })
    got = explore.within_request_spearman(_load(tmp_path, frame))
    concordant = spearmanr([1, 2, 3], [0, 0, 1]).statistic
    assert got.loc["pred_click", "label_click"] == pytest.approx(concordant)
    assert got.loc["pred_click", "pred_like"] == pytest.approx(0.0)  # (+1 + -1) / 2


# --- calibration --------------------------------------------------------------------------------
def test_reliability_curve_and_ece_by_hand(tmp_path: Path) -> None:
    scores = np.array([0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4])
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    frame = pd.DataFrame({"request_id": np.repeat([1, 2], 4), "user_id": 1,
                          "item_id": np.arange(8), "pred_click": scores, "label_click": labels})
    logs = _load(tmp_path, frame)
    curve = explore.reliability_curve(logs, "click", bins=4)
    assert list(curve.columns) == ["bin", "score_low", "score_high", "mean_score", "positive_rate",
                                   "mean_label", "count"]
    np.testing.assert_array_equal(curve["bin"], [0, 1, 2, 3])
    np.testing.assert_allclose(curve["mean_score"], [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    np.testing.assert_allclose(curve["positive_rate"], [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(curve["count"], [2, 2, 2, 2])
    expected = (2 * 0.1 + 2 * 0.3 + 2 * 0.2 + 2 * 0.6) / 8
    got = explore.expected_calibration_error(logs, "click", bins=4)
    assert got == pytest.approx(expected, rel=1e-6)


def test_tied_scores_share_a_bin_and_empty_bins_are_left_out(tmp_path: Path) -> None:
    scores = np.array([0.5] * 7 + [0.9] * 3)
    frame = pd.DataFrame({"request_id": 1, "user_id": 1, "item_id": np.arange(10),
                          "pred_click": scores, "label_click": [1] * 3 + [0] * 7})
    curve = explore.reliability_curve(_load(tmp_path, frame), "click", bins=10)
    np.testing.assert_array_equal(curve["count"], [7, 3])
    np.testing.assert_allclose(curve["score_low"], [0.5, 0.9], rtol=1e-6)
    np.testing.assert_allclose(curve["positive_rate"], [3 / 7, 0.0])


def test_graded_calibration_compares_mean_score_with_mean_label(tmp_path: Path) -> None:
    frame = make_log_frame(50, seed=2, objectives=("dwell",))
    logs = _load(tmp_path, frame)
    curve = explore.reliability_curve(logs, "dwell", bins=5)
    assert curve["count"].sum() == logs.n_rows
    scores = logs.scores[:, 0].astype(np.float64)
    labels = logs.labels[:, 0].astype(np.float64)
    edges = np.quantile(scores, np.linspace(0, 1, 6))
    index = np.searchsorted(edges[1:-1], scores, side="right")
    expected = sum(np.sum(index == b) * abs(scores[index == b].mean() - labels[index == b].mean())
                   for b in np.unique(index)) / len(scores)
    assert explore.expected_calibration_error(logs, "dwell", bins=5) == pytest.approx(expected)
    assert np.all(curve["positive_rate"] <= 1.0)


@pytest.mark.parametrize("bins", [0, -1, 2.5, True])
def test_bad_bins_are_rejected(tied_logs: fusion.LogSet, bins) -> None:
    with pytest.raises(fusion.FusionError, match="bins must be a whole number"):
        explore.reliability_curve(tied_logs, "click", bins=bins)


def test_unknown_objective_names_the_known_ones(tied_logs: fusion.LogSet) -> None:
    with pytest.raises(fusion.SchemaError, match="unknown objective 'conversion'"):
        explore.reliability_curve(tied_logs, "conversion")


# --- single-score rankings ----------------------------------------------------------------------
def _gauc_oracle(logs: fusion.LogSet, by: int, label: int) -> float:
    total, weight = 0.0, 0
    offsets = logs.group_offsets
    for start, stop in zip(offsets[:-1], offsets[1:]):
        positive = logs.labels[start:stop, label] > logs.schema.objectives[label].positive_threshold
        if positive.all() or not positive.any():
            continue
        total += (stop - start) * roc_auc_score(positive, logs.scores[start:stop, by])
        weight += stop - start
    return total / weight


def test_single_score_gauc_equals_the_per_request_sklearn_oracle(tied_logs: fusion.LogSet) -> None:
    got = explore.single_score_gauc(tied_logs)
    assert list(got) == ["click", "dwell", "share"]
    for j, objective in enumerate(tied_logs.objectives):
        assert got[objective] == pytest.approx(_gauc_oracle(tied_logs, j, j), abs=1e-12)


def test_score_label_matrix_ranks_by_each_score_alone(tied_logs: fusion.LogSet) -> None:
    matrix = explore.score_label_matrix(tied_logs)
    assert matrix.index.name == "ranked_by" and matrix.columns.name == "label"
    assert list(matrix.index) == list(matrix.columns) == ["click", "dwell", "share"]
    for by in tied_logs.objectives:
        result = evaluate(tied_logs, Formula.sum({by: 1.0}), metrics=["gauc", "ndcg@10"])
        # Default: the graded objective (dwell) by ndcg@10, the binary ones by gauc.
        assert matrix.loc[by, "dwell"] == result["dwell", "ndcg@10"]
        assert matrix.loc[by, "click"] == result["click", "gauc"]
        assert matrix.loc[by, "share"] == result["share", "gauc"]
    j = tied_logs.objective_index
    oracle = _gauc_oracle(tied_logs, j("share"), j("click"))
    assert matrix.loc["share", "click"] == pytest.approx(oracle)


def test_score_label_matrix_takes_a_metric_per_label(tied_logs: fusion.LogSet) -> None:
    matrix = explore.score_label_matrix(tied_logs, metrics={"click": "top@5"}, default="ndcg@3")
    result = evaluate(tied_logs, Formula.sum({"share": 1.0}), metrics=["top@5", "ndcg@3"])
    assert matrix.loc["share", "click"] == result["click", "top@5"]
    assert matrix.loc["share", "dwell"] == result["dwell", "ndcg@3"]
    assert matrix.loc["share", "share"] == result["share", "ndcg@3"]


def test_score_label_matrix_rejects_unknown_objectives_and_metrics(
        tied_logs: fusion.LogSet) -> None:
    with pytest.raises(fusion.SchemaError, match="unknown objective 'conversion'"):
        explore.score_label_matrix(tied_logs, metrics={"conversion": "gauc"})
    with pytest.raises(fusion.MetricError, match="cut-off K >= 1"):
        explore.score_label_matrix(tied_logs, default="ndcg@0")


@pytest.mark.parametrize("call", [explore.within_request_spearman, explore.single_score_gauc,
                                  explore.score_label_matrix,
                                  lambda logs: explore.reliability_curve(logs, "click")])
def test_non_logsets_are_rejected(call) -> None:
    with pytest.raises(fusion.FusionError, match="logs must be a LogSet"):
        call(pd.DataFrame({"pred_click": [0.5]}))

"""The DuckDB and scikit-learn reference implementations against the kernel."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fusion.errors import InvalidValueError, MetricError
from fusion.metrics import global_auc, grouped_metric_sums, parse_metrics
from fusion.reference import _metric_sql, sklearn_loop_metrics, sql_metrics


def tied_case(seed: int, n_groups: int, max_size: int, decimals: int):
    rng = np.random.default_rng(seed)
    sizes = np.concatenate(([1, 2, max_size], rng.integers(1, max_size + 1, n_groups)))
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    n = int(offsets[-1])
    fused = np.round(rng.normal(size=n), decimals)
    labels = np.stack([
        (rng.random(n) < 0.2).astype(np.float32),
        np.where(rng.random(n) < 0.3, np.round(rng.exponential(25.0, n), 1), 0.0
                 ).astype(np.float32),
        (rng.random(n) < 0.02).astype(np.float32),  # rare: many single-class groups
    ], axis=1)
    labels[offsets[3]:offsets[4]] = 0.0  # one group with no label at all
    return fused, labels, offsets


@pytest.mark.parametrize(("seed", "decimals"), [(0, 1), (1, 2), (2, 6)])
def test_sql_matches_kernel_on_tied_data(seed, decimals):
    fused, labels, offsets = tied_case(seed, 400, 300, decimals)
    specs = ("gauc", "ndcg@10", "top@10", "ndcg@1", "top@3", "ndcg@1000", "auc")
    rules = dict(positive_thresholds=np.array([0.0, 20.0, 0.0]),
                 log1p_gain=np.array([False, True, False]))
    got = grouped_metric_sums(fused, labels, offsets, specs=specs[:-1], **rules)
    want = sql_metrics(fused, labels, offsets, specs=specs, threads=2, **rules)
    np.testing.assert_allclose(want.values[:, :-1], got.values()[0], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(want.groups_used[:, :-1], got.groups_used)
    # The largest K of a call decides which items get ranked: check other combinations too.
    for subset in [(0, 1, 2), (0, 3, 4), (1,), (2,), (0,)]:
        part = grouped_metric_sums(fused, labels, offsets, specs=[specs[s] for s in subset],
                                   **rules)
        np.testing.assert_allclose(part.values()[0], want.values[:, subset], rtol=0, atol=1e-9,
                                   err_msg=str(subset))
    for j, threshold in enumerate(rules["positive_thresholds"]):
        positives = labels[:, j] > np.float32(threshold)
        assert want.values[j, -1] == pytest.approx(global_auc(fused, positives), abs=1e-12)
    assert (want.groups_used[:, -1] == 1).all()


def test_sql_and_sklearn_agree_with_linear_graded_gain():
    fused, labels, offsets = tied_case(3, 25, 40, 1)
    specs = ("gauc", "ndcg@5", "top@5", "auc")
    rules = dict(positive_thresholds=np.zeros(3), log1p_gain=np.zeros(3, bool))
    by_sql = sql_metrics(fused, labels, offsets, specs=specs, **rules)
    by_sklearn = sklearn_loop_metrics(fused, labels, offsets, specs=specs, **rules)
    np.testing.assert_allclose(by_sql.values, by_sklearn.values, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(by_sql.groups_used, by_sklearn.groups_used)


def test_references_give_nan_where_no_group_counts():
    fused = np.array([0.1, 0.2, 0.2, 0.4])
    labels = np.zeros((4, 1), np.float32)
    offsets = np.array([0, 1, 4])
    rules = dict(specs=("gauc", "ndcg@2", "top@2", "auc"), positive_thresholds=[0.0],
                 log1p_gain=[False])
    for reference in (sql_metrics, sklearn_loop_metrics):
        got = reference(fused, labels, offsets, **rules)
        assert np.isnan(got.values[0, [0, 1, 3]]).all(), reference.__name__
        assert got.values[0, 2] == 0.0
        assert got.groups_used.tolist() == [[0, 0, 2, 0]]


def test_sklearn_loop_handles_one_row_groups():
    fused = np.array([0.3, 0.1, 0.2])
    labels = np.array([[2.0], [0.0], [1.0]], np.float32)
    got = sklearn_loop_metrics(fused, labels, np.array([0, 1, 3]), specs=("ndcg@3", "top@1"),
                               positive_thresholds=[0.0], log1p_gain=[True])
    # One-row group: NDCG 1 (scikit-learn refuses it); second group ranks its positive first.
    assert got.values[0].tolist() == [1.0, 1.5]


def test_sql_text_holds_no_values():
    sql = _metric_sql(2, parse_metrics(["gauc", "ndcg@12345", "top@777", "auc"]))
    assert "12345" not in sql and "777" not in sql
    assert "$k1" in sql and "$t0" in sql and "$log1" in sql


def test_references_validate_inputs():
    with pytest.raises(InvalidValueError, match="shapes"):
        sql_metrics(np.zeros((2, 3)), np.zeros((3, 1)), [0, 3], specs=["gauc"],
                    positive_thresholds=[0.0], log1p_gain=[False])
    with pytest.raises(InvalidValueError, match="group_offsets"):
        sklearn_loop_metrics(np.zeros(3), np.zeros((3, 1)), [0, 2], specs=["gauc"],
                             positive_thresholds=[0.0], log1p_gain=[False])
    with pytest.raises(MetricError):
        sql_metrics(np.zeros(3), np.zeros((3, 1)), [0, 3], specs=["ndcg@0"],
                    positive_thresholds=[0.0], log1p_gain=[False])


def test_sklearn_loop_explains_a_missing_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)
    with pytest.raises(ImportError, match="requirements-dev.txt"):
        sklearn_loop_metrics(np.zeros(3), np.zeros((3, 1)), [0, 3], specs=["gauc"],
                             positive_thresholds=[0.0], log1p_gain=[False])

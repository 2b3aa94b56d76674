"""The metric kernel against scikit-learn, a brute-force oracle and its own invariances."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from fusion import metrics
from fusion.errors import InvalidValueError, MetricError
from fusion.formulas import combine
from fusion.metrics import (
    MetricSpec,
    MetricSums,
    global_auc,
    grouped_metric_sums,
    label_rules,
    parse_metric,
    parse_metrics,
)
from fusion.reference import sklearn_loop_metrics
from fusion.schema import Objective

SPECS = ("gauc", "ndcg@10", "top@10")


def offsets_of(sizes) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)


def random_case(seed: int, sizes, n_candidates: int = 2, decimals: int = 2):
    """Fused scores rounded to ``decimals`` (heavy ties); a binary and a graded objective,
    with some groups forced single-class or all-zero."""
    rng = np.random.default_rng(seed)
    sizes = np.asarray(sizes)
    n = int(sizes.sum())
    fused = np.round(rng.random((n_candidates, n)), decimals)
    click = (rng.random(n) < 0.3).astype(np.float32)
    dwell = np.where(rng.random(n) < 0.4, np.round(rng.exponential(20.0, n), 1), 0.0)
    labels = np.stack([click, dwell.astype(np.float32)], axis=1)
    offsets = offsets_of(sizes)
    for g in range(0, len(sizes), 5):  # every 5th group: all clicked, no dwell
        labels[offsets[g]:offsets[g + 1], 0] = 1.0
        labels[offsets[g]:offsets[g + 1], 1] = 0.0
    return fused, labels, offsets


def kernel(fused, labels, offsets, specs=SPECS, thresholds=None, log1p=None) -> MetricSums:
    m = labels.shape[1]
    return grouped_metric_sums(
        fused, labels, offsets, specs=specs,
        positive_thresholds=np.zeros(m) if thresholds is None else np.asarray(thresholds, float),
        log1p_gain=np.zeros(m, bool) if log1p is None else np.asarray(log1p, bool))


# --- names ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gauc", "auc", "ndcg@1", "ndcg@10", "top@7", "top@500"])
def test_metric_names_round_trip(name):
    spec = parse_metric(name)
    assert str(spec) == name
    assert parse_metric(spec) is spec
    assert spec.grouped == (name != "auc")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.k = 3


def test_parse_metric_normalises_case_and_space():
    assert parse_metric(" NDCG@5 ") == MetricSpec("ndcg", 5)


@pytest.mark.parametrize("bad", ["foo", "ndcg", "top", "ndcg@0", "ndcg@-1", "ndcg@x", "top@1.5",
                                 "gauc@5", "auc@3", "", "ndcg@"])
def test_parse_metric_rejects(bad):
    with pytest.raises(MetricError):
        parse_metric(bad)


def test_metric_spec_rejects_bad_k():
    with pytest.raises(MetricError, match="K >= 1"):
        MetricSpec("top", 0)
    with pytest.raises(MetricError, match="no cut-off"):
        MetricSpec("gauc", 3)
    with pytest.raises(MetricError):
        parse_metric(10)


def test_parse_metrics_rejects_empty_and_repeats():
    assert parse_metrics("gauc") == (MetricSpec("gauc"),)
    with pytest.raises(MetricError, match="no metric"):
        parse_metrics([])
    with pytest.raises(MetricError, match="repeated.*'ndcg@5'"):
        parse_metrics(["ndcg@5", "gauc", "NDCG@5"])


def test_label_rules_follow_objectives():
    thresholds, log1p = label_rules([
        Objective("click", "p", "l"),
        Objective("dwell", "pd", "ld", kind="graded", positive_threshold=30.0),
    ])
    assert thresholds.tolist() == [0.0, 30.0]
    assert log1p.tolist() == [False, True]


# --- against scikit-learn ------------------------------------------------------------------
@pytest.mark.parametrize("log1p", [(False, True), (True, False)])
def test_kernel_matches_sklearn_per_request(log1p):
    rng = np.random.default_rng(7)
    sizes = np.concatenate(([1, 2, 3, 10, 11, 500, 250], rng.integers(1, 60, 25)))
    fused, labels, offsets = random_case(1, sizes)
    specs = ("gauc", "ndcg@10", "top@10", "ndcg@3", "top@100", "ndcg@100")
    thresholds = [0.0, 15.0]
    got = kernel(fused, labels, offsets, specs, thresholds, log1p)
    wants = [sklearn_loop_metrics(fused[c], labels, offsets, specs=specs,
                                  positive_thresholds=thresholds, log1p_gain=log1p)
             for c in range(fused.shape[0])]
    for c, want in enumerate(wants):
        np.testing.assert_allclose(got.values()[c], want.values, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(got.groups_used, want.groups_used)
    # The largest K of a call decides which items get ranked: check other combinations too.
    for subset in [(0, 1, 2), (0, 3), (1,), (2, 3), (0,), (0, 4)]:
        part = kernel(fused, labels, offsets, [specs[s] for s in subset], thresholds, log1p)
        for c, want in enumerate(wants):
            np.testing.assert_allclose(part.values()[c], want.values[:, subset], rtol=0,
                                       atol=1e-9, err_msg=str(subset))
    # The case exercises the degenerate groups it claims to.
    assert got.groups_skipped[0, 0] > 0 and got.groups_skipped[1, 1] > 0
    assert (got.groups_used + got.groups_skipped == len(sizes)).all()


def test_sorting_path_matches_counting_path(monkeypatch):
    sizes = [1, 4, 60, 500, 300, 17]
    fused, labels, offsets = random_case(3, sizes, n_candidates=3, decimals=1)
    specs = ("gauc", "ndcg@5", "top@5", "ndcg@80")
    counted = kernel(fused, labels, offsets, specs, log1p=[False, True]).values()
    monkeypatch.setattr(metrics, "_COUNTING_MAX", 0)
    sorted_ = kernel(fused, labels, offsets, specs, log1p=[False, True]).values()
    np.testing.assert_allclose(sorted_, counted, rtol=0, atol=1e-12)


# --- brute force ---------------------------------------------------------------------------
def all_tie_orders(scores: np.ndarray):
    """Every ordering of the items that sorts scores descending (ties in every order)."""
    blocks = [np.flatnonzero(scores == v).tolist() for v in sorted(set(scores), reverse=True)]
    for choice in itertools.product(*(itertools.permutations(b) for b in blocks)):
        yield [i for block in choice for i in block]


def brute_force(scores, labels, k, log1p, threshold):
    """(auc, ndcg@k, top@k) of one group: ndcg/top averaged over all tie orders; AUC by
    counting pairs (ties 1/2). None where the group is skipped."""
    gains = np.log1p(labels) if log1p else labels
    orders = list(all_tie_orders(scores))
    discounts = 1.0 / np.log2(np.arange(2, len(scores) + 2))
    dcg = np.mean([sum(gains[i] * discounts[r] for r, i in enumerate(o[:k])) for o in orders])
    top = np.mean([sum(labels[i] for i in o[:k]) for o in orders])
    ideal = sum(g * d for g, d in zip(sorted(gains, reverse=True)[:k], discounts))
    positive = labels > np.float32(threshold)
    pairs = [(1.0 if scores[p] > scores[q] else 0.5 if scores[p] == scores[q] else 0.0)
             for p in np.flatnonzero(positive) for q in np.flatnonzero(~positive)]
    auc = float(np.mean(pairs)) if pairs else None
    return auc, (dcg / ideal if ideal > 0 else None), top


small_groups = st.lists(
    st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0.0, 0.0, 1.0, 2.0, 7.5])),
             min_size=1, max_size=6),
    min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(groups=small_groups, k=st.integers(1, 7), log1p=st.booleans(),
       threshold=st.sampled_from([0.0, 1.5]))
def test_kernel_matches_brute_force_over_tie_orders(groups, k, log1p, threshold):
    fused = np.array([s for g in groups for s, _ in g], dtype=np.float64)
    labels = np.array([[lab] for g in groups for _, lab in g], dtype=np.float32)
    offsets = offsets_of([len(g) for g in groups])
    got = kernel(fused, labels, offsets, ("gauc", f"ndcg@{k}", f"top@{k}"), [threshold], [log1p])
    aucs, ndcgs, tops, sizes = [], [], [], []
    for g in range(len(groups)):
        rows = slice(offsets[g], offsets[g + 1])
        auc, ndcg, top = brute_force(fused[rows], labels[rows, 0].astype(np.float64), k, log1p,
                                     threshold)
        if auc is not None:
            aucs.append(auc)
            sizes.append(rows.stop - rows.start)
        if ndcg is not None:
            ndcgs.append(ndcg)
        tops.append(top)
    want = [np.average(aucs, weights=sizes) if aucs else np.nan,
            np.mean(ndcgs) if ndcgs else np.nan, np.mean(tops)]
    np.testing.assert_allclose(got.values()[0, 0], want, rtol=0, atol=1e-12)
    assert got.groups_used[0].tolist() == [len(aucs), len(ndcgs), len(groups)]


# --- invariances ---------------------------------------------------------------------------
tied_groups = st.lists(
    st.lists(st.tuples(st.integers(-8, 8), st.integers(0, 1),
                       st.sampled_from([0.0, 0.5, 3.0, 40.0])),
             min_size=1, max_size=30),
    min_size=1, max_size=12)


def _arrays(groups):
    fused = np.array([[s for g in groups for s, _, _ in g]], dtype=np.float64)
    labels = np.array([[c, d] for g in groups for _, c, d in g], dtype=np.float32)
    return fused, labels, offsets_of([len(g) for g in groups])


def _values(fused, labels, offsets):
    got = kernel(fused, labels, offsets, ("gauc", "ndcg@3", "top@3", "ndcg@50"),
                 thresholds=[0.0, 1.0], log1p=[False, True])
    return got.values(), got.groups_used


@settings(max_examples=40, deadline=None)
@given(groups=tied_groups, seed=st.integers(0, 2**32 - 1))
def test_invariant_to_row_and_request_order(groups, seed):
    fused, labels, offsets = _arrays(groups)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    rows = np.concatenate([offsets[g] + rng.permutation(offsets[g + 1] - offsets[g])
                           for g in order])
    shuffled_offsets = offsets_of(np.diff(offsets)[order])
    want_values, want_used = _values(fused, labels, offsets)
    got_values, got_used = _values(fused[:, rows], labels[rows], shuffled_offsets)
    np.testing.assert_allclose(got_values, want_values, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got_used, want_used)


@settings(max_examples=30, deadline=None)
@given(groups=tied_groups, scale=st.sampled_from([0.5, 3.0, 1000.0, 2.0**-20]),
       transform=st.sampled_from(["scale", "cube", "exp", "shift"]))
def test_invariant_to_increasing_transforms(groups, scale, transform):
    fused, labels, offsets = _arrays(groups)
    moved = {
        "scale": fused * scale,
        "cube": fused ** 3 + fused,  # exact on small integers, strictly increasing
        "exp": np.exp(fused / 4.0),
        "shift": fused * scale + 1e6,
    }[transform]
    want_values, want_used = _values(fused, labels, offsets)
    got_values, got_used = _values(moved, labels, offsets)
    np.testing.assert_allclose(got_values, want_values, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got_used, want_used)


def test_negating_scores_mirrors_gauc():
    fused, labels, offsets = random_case(5, [5, 9, 30, 2], n_candidates=1)
    up = kernel(fused, labels, offsets, ("gauc",)).values()[0, :, 0]
    # Each group's AUC becomes 1 - AUC; the weights are the same.
    down = kernel(-fused, labels, offsets, ("gauc",)).values()[0, :, 0]
    np.testing.assert_allclose(up + down, 1.0, atol=1e-12)


# --- additivity, candidates, threads -------------------------------------------------------
def test_chunks_of_whole_groups_add_up():
    sizes = np.random.default_rng(2).integers(1, 80, 40)
    fused, labels, offsets = random_case(4, sizes, n_candidates=3)
    whole = kernel(fused, labels, offsets)
    cut = offsets[17]
    head = kernel(fused[:, :cut], labels[:cut], offsets[:18])
    tail = kernel(fused[:, cut:], labels[cut:], offsets[17:] - cut)
    total = head + tail
    np.testing.assert_allclose(total.sums, whole.sums, rtol=1e-13)
    np.testing.assert_array_equal(total.weights, whole.weights)
    np.testing.assert_array_equal(total.groups_used, whole.groups_used)
    np.testing.assert_array_equal(total.groups_skipped, whole.groups_skipped)
    np.testing.assert_allclose(total.values(), whole.values(), rtol=1e-13)


def test_adding_mismatched_sums_fails():
    fused, labels, offsets = random_case(4, [3, 4])
    with pytest.raises(MetricError, match="cannot add"):
        kernel(fused, labels, offsets) + kernel(fused, labels, offsets, ("gauc",))
    with pytest.raises(TypeError):
        kernel(fused, labels, offsets) + 1


def test_each_candidate_gives_the_same_bits_alone_and_in_a_batch():
    fused, labels, offsets = random_case(6, np.arange(1, 90), n_candidates=4)
    batch = kernel(fused, labels, offsets).sums
    for c in range(4):
        assert np.array_equal(kernel(fused[c], labels, offsets).sums[0], batch[c])


def combined(features, weights, labels, offsets, specs=SPECS) -> MetricSums:
    m = labels.shape[1]
    return metrics.combined_metric_sums(features, weights, labels, offsets, specs=specs,
                                        positive_thresholds=np.zeros(m),
                                        log1p_gain=np.array([False, True]))


def test_fusing_inside_the_kernel_gives_the_bits_of_fusing_first():
    rng = np.random.default_rng(12)
    _, labels, offsets = random_case(12, np.arange(1, 120))
    # Features on a coarse grid and weights with zeros: many exact ties in the fused scores.
    features = np.round(rng.random((labels.shape[0], 3)), 1)
    weights = np.round(rng.random((5, 3)), 1)
    weights[1, 0] = weights[3, 2] = 0.0
    fused = combine(features, weights)
    assert len(np.unique(fused[0])) < fused.shape[1] / 2
    specs = ("gauc", "ndcg@3", "top@10", "top@200")
    got = combined(features, weights, labels, offsets, specs)
    want = kernel(fused, labels, offsets, specs, log1p=[False, True])
    assert np.array_equal(got.sums, want.sums) and np.array_equal(got.weights, want.weights)
    assert np.array_equal(got.groups_used, want.groups_used)
    for c in range(5):
        assert np.array_equal(combined(features, weights[c], labels, offsets, specs).sums[0],
                              got.sums[c])


def test_fusing_inside_the_kernel_checks_its_inputs():
    _, labels, offsets = random_case(3, [3, 4])
    features = np.ones((7, 2))
    features[4, 1] = np.nan
    # A NaN feature counts only where it is weighted.
    assert combined(features, [1.0, 0.0], labels, offsets).values().shape == (1, 2, 3)
    with pytest.raises(InvalidValueError, match="1 value.*NaN.*candidate 1, row 4"):
        combined(features, [[1.0, 0.0], [0.5, 0.5]], labels, offsets)
    with pytest.raises(InvalidValueError, match=r"shapes \(7, 2\) and \(1, 3\)"):
        combined(features, [1.0, 1.0, 1.0], labels, offsets)
    with pytest.raises(InvalidValueError, match="weights: 1 value.*candidate 0, column 1: inf"):
        combined(features, [1.0, np.inf], labels, offsets)
    with pytest.raises(InvalidValueError, match="6 rows but labels have 7"):
        combined(features[:6], [1.0, 0.0], labels, offsets)


def test_weight_terms_list_each_candidates_nonzero_weights_in_column_order():
    starts, columns, values = metrics.weight_terms(np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 0.0],
                                                             [1.0, 0.0, 0.5]]))
    assert starts.tolist() == [0, 2, 2, 4]
    assert columns.tolist() == [1, 2, 0, 2]
    assert values.tolist() == [2.0, 3.0, 1.0, 0.5]


def test_candidates_per_call_keep_the_chunk_layout():
    offsets = offsets_of(np.full(12_000, 50))  # rows for the most chunks
    most = metrics.candidates_per_call(4, 3)
    layout = metrics._chunk_starts(offsets, 1)
    assert len(layout) == metrics._MAX_CHUNKS + 1
    assert np.array_equal(metrics._chunk_starts(offsets, most * 4 * 3), layout)
    assert len(metrics._chunk_starts(offsets, (most + 1) * 4 * 3)) < len(layout)


@pytest.mark.parametrize("threads", [2, 3])
def test_results_do_not_depend_on_the_thread_count(monkeypatch, threads):
    fused, labels, offsets = random_case(8, np.arange(1, 300), n_candidates=2)
    assert len(metrics._chunk_starts(offsets, 1)) > 3  # several chunks to share
    monkeypatch.setattr(metrics, "_thread_count", lambda: 1)
    single = kernel(fused, labels, offsets).sums
    monkeypatch.setattr(metrics, "_thread_count", lambda: threads)
    assert np.array_equal(kernel(fused, labels, offsets).sums, single)


def test_an_error_in_a_helper_thread_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(metrics, "_thread_count", lambda: 2)
    seen = []

    def run(chunk):
        seen.append(chunk)
        if chunk == 3:
            raise RuntimeError("chunk 3 failed")

    with pytest.raises(RuntimeError, match="chunk 3 failed"):
        metrics._run_chunks(6, run)
    assert sorted(seen) == list(range(6))


# --- degenerate cases, pinned by hand ------------------------------------------------------
def one_group(scores, labels, specs, threshold=0.0, log1p=False):
    fused = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float32)[:, np.newaxis]
    got = kernel(fused, labels, offsets_of([len(scores)]), specs, [threshold], [log1p])
    return got.values()[0, 0], got.groups_used[0], got.groups_skipped[0]


def test_hand_computed_group_with_a_tie():
    # Ascending ranks 4, 2.5, 2.5, 1; positives hold 2.5 and 1: AUC = (3.5 - 3) / (2 * 2).
    # ndcg@2: slot 1 holds a 0, slot 2 half of the tied pair's gain (1 + 0) / 2.
    values, used, skipped = one_group([3, 2, 2, 1], [0, 1, 0, 1],
                                      ("gauc", "ndcg@2", "top@2", "top@3", "top@1"))
    ideal = 1 + 1 / math.log2(3)
    np.testing.assert_allclose(values, [0.125, 0.5 / math.log2(3) / ideal, 0.5, 1.0, 0.0],
                               atol=1e-15)
    assert used.tolist() == [1] * 5 and skipped.tolist() == [0] * 5


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1]])
def test_single_class_group_is_skipped_by_gauc(labels):
    values, used, skipped = one_group([0.3, 0.1, 0.2], labels, ("gauc",))
    assert np.isnan(values[0]) and used[0] == 0 and skipped[0] == 1


def test_all_positive_group_has_ndcg_one_whatever_the_order():
    values, used, _ = one_group([0.3, 0.1, 0.2], [1, 1, 1], ("ndcg@2", "ndcg@10"))
    np.testing.assert_allclose(values, [1.0, 1.0], atol=1e-15)
    assert used.tolist() == [1, 1]


def test_zero_ideal_dcg_is_skipped_by_ndcg_but_counted_by_top():
    values, used, skipped = one_group([0.3, 0.1, 0.2], [0, 0, 0], ("ndcg@2", "top@2"))
    assert np.isnan(values[0]) and used[0] == 0 and skipped[0] == 1
    assert values[1] == 0.0 and used[1] == 1 and skipped[1] == 0


@pytest.mark.parametrize("k", [3, 4, 1000])
def test_k_at_or_beyond_group_size_uses_the_whole_group(k):
    scores, labels = [0.9, 0.5, 0.5], [2.0, 0.0, 5.0]
    values, _, _ = one_group(scores, labels, (f"ndcg@{k}", f"top@{k}"))
    full, _, _ = one_group(scores, labels, ("ndcg@3", "top@3"))
    np.testing.assert_array_equal(values, full)
    assert values[1] == 7.0  # top@K of a small group: every label
    dcg = 2.0 + 2.5 / math.log2(3) + 2.5 / math.log2(4)
    ideal = 5.0 + 2.0 / math.log2(3)
    np.testing.assert_allclose(values[0], dcg / ideal, atol=1e-15)


def test_group_of_one_row():
    values, used, skipped = one_group([0.4], [3.0], ("gauc", "ndcg@5", "top@5"))
    assert np.isnan(values[0]) and used.tolist() == [0, 1, 1] and skipped.tolist() == [1, 0, 0]
    assert values[1] == 1.0 and values[2] == 3.0


def test_fully_tied_group_averages_everything():
    values, _, _ = one_group([0.5] * 4, [1, 0, 0, 1], ("gauc", "ndcg@2", "top@2"))
    # ndcg@2: both slots hold the mean gain 1/2, the ideal holds two 1s.
    np.testing.assert_allclose(values, [0.5, 0.5, 1.0], atol=1e-15)


def test_infinite_scores_are_ordinary_and_tie():
    values, _, _ = one_group([np.inf, -np.inf, -np.inf, 0.0], [0, 1, 0, 1], ("gauc", "top@2"))
    # Positives: 0.0 (rank 3) and one of the -inf pair (rank 1.5): (4.5 - 3) / 4.
    np.testing.assert_allclose(values, [0.375, 1.0], atol=1e-15)


def test_positive_threshold_is_strict_and_in_float32():
    values, used, _ = one_group([3, 2, 1], [20.0, 10.0, 0.0], ("gauc",), threshold=10.0)
    assert values[0] == 1.0 and used[0] == 1
    # The label 0.1 stored as float32 is not above the threshold 0.1 (compared in float32;
    # in float64 it would be 0.10000000149 > 0.1 and the group would have both classes).
    _, used, _ = one_group([2, 1], [0.1, 0.0], ("gauc",), threshold=0.1)
    assert used[0] == 0


def test_log1p_gain_changes_ndcg_only():
    linear, _, _ = one_group([3, 2, 1], [0.0, 9.0, 1.0], ("ndcg@3", "top@3"), log1p=False)
    logged, _, _ = one_group([3, 2, 1], [0.0, 9.0, 1.0], ("ndcg@3", "top@3"), log1p=True)
    d2, d3 = 1 / math.log2(3), 1 / math.log2(4)
    np.testing.assert_allclose(linear[0], (9 * d2 + 1 * d3) / (9 + 1 * d2), atol=1e-15)
    g9, g1 = math.log1p(9), math.log1p(1)
    np.testing.assert_allclose(logged[0], (g9 * d2 + g1 * d3) / (g9 + g1 * d2), atol=1e-15)
    assert linear[1] == logged[1] == 10.0


def test_no_usable_group_gives_nan_with_zero_weight():
    got = kernel(np.array([0.1, 0.2, 0.3]), np.zeros((3, 1), np.float32), offsets_of([1, 2]),
                 ("gauc", "ndcg@2"))
    assert np.isnan(got.values()).all()
    assert (got.weights == 0).all() and got.groups_skipped.tolist() == [[2, 2]]


def test_gauc_weights_groups_by_size():
    # Group A (4 rows) AUC 1, group B (2 rows) AUC 0: GAUC = (4 * 1 + 2 * 0) / 6.
    fused = np.array([4, 3, 2, 1, 1, 2], dtype=np.float64)
    labels = np.array([[1], [1], [1], [0], [1], [0]], dtype=np.float32)
    got = kernel(fused, labels, offsets_of([4, 2]), ("gauc",))
    np.testing.assert_allclose(got.values()[0, 0, 0], 4 / 6, atol=1e-15)
    assert got.weights[0, 0, 0] == 6


# --- input errors --------------------------------------------------------------------------
def test_rejects_bad_inputs():
    fused, labels, offsets = random_case(0, [3, 4])
    with pytest.raises(InvalidValueError, match="1 value.*NaN.*candidate 1, row 2"):
        bad = fused.copy()
        bad[1, 2] = np.nan
        kernel(bad, labels, offsets)
    with pytest.raises(InvalidValueError, match="labels: 1 value.*row 5, objective 1: -1.0"):
        bad = labels.copy()
        bad[5, 1] = -1
        kernel(fused, bad, offsets)
    with pytest.raises(InvalidValueError, match="empty"):
        kernel(fused, labels, np.array([0, 3, 3, 7]))
    with pytest.raises(InvalidValueError, match="end at the row count 7"):
        kernel(fused, labels, np.array([0, 3, 6]))
    with pytest.raises(InvalidValueError, match="rows"):
        kernel(fused[:, :5], labels, offsets)
    with pytest.raises(InvalidValueError, match="one value per objective"):
        kernel(fused, labels, offsets, thresholds=[0.0])
    with pytest.raises(MetricError, match="'auc' is a global metric"):
        kernel(fused, labels, offsets, ("gauc", "auc"))


# --- global AUC ----------------------------------------------------------------------------
def test_global_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(11)
    fused = np.round(rng.random(5000), 2)
    positives = rng.random(5000) < fused
    assert global_auc(fused, positives) == pytest.approx(roc_auc_score(positives, fused),
                                                         abs=1e-12)


def test_global_auc_degenerate_and_errors():
    assert np.isnan(global_auc(np.array([0.1, 0.2]), np.array([True, True])))
    assert np.isnan(global_auc(np.array([0.1, 0.2]), np.array([False, False])))
    assert global_auc(np.array([0.5, 0.5, 0.5]), np.array([True, False, True])) == 0.5
    with pytest.raises(InvalidValueError, match="bool"):
        global_auc(np.array([0.1, 0.2]), np.array([1, 0]))
    with pytest.raises(InvalidValueError, match="same length"):
        global_auc(np.array([0.1, 0.2]), np.array([True]))
    with pytest.raises(InvalidValueError, match="NaN"):
        global_auc(np.array([0.1, np.nan]), np.array([True, False]))

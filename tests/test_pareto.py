"""Pareto ranks, hypervolume and front picks, checked against brute-force oracles,
moocore's own ranking and optuna's hypervolume."""

from __future__ import annotations

import doctest
import itertools

import moocore
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna._hypervolume import compute_hypervolume

from fusion import pareto
from fusion.errors import SearchError
from fusion.pareto import (
    closest_to_preference,
    greedy_hypervolume_subset,
    hypervolume,
    knee_point,
    pareto_ranks,
    update_front,
)


# --- oracles -------------------------------------------------------------------------------
def brute_force_ranks(points: np.ndarray) -> np.ndarray:
    """Peel fronts with an O(n^2) dominance check per layer."""
    n = len(points)
    ranks = np.full(n, -1)
    remaining = set(range(n))
    layer = 0
    while remaining:
        front = [
            i for i in remaining
            if not any(
                np.all(points[j] >= points[i]) and np.any(points[j] > points[i])
                for j in remaining if j != i
            )
        ]
        for i in front:
            ranks[i] = layer
        remaining -= set(front)
        layer += 1
    return ranks


def inclusion_exclusion_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact volume of the union of boxes [reference, p] by inclusion-exclusion."""
    boxes = [p for p in points if np.all(p > reference)]
    total = 0.0
    for size in range(1, len(boxes) + 1):
        for subset in itertools.combinations(boxes, size):
            corner = np.min(np.array(subset), axis=0)
            total += (-1) ** (size + 1) * float(np.prod(corner - reference))
    return total


def point_sets(max_points: int = 40, max_dims: int = 5, grid: int = 5):
    """Small integer-grid point sets: many ties and exact duplicates."""
    return st.integers(1, max_dims).flatmap(
        lambda d: st.lists(
            st.lists(st.integers(0, grid), min_size=d, max_size=d),
            min_size=0,
            max_size=max_points,
        ).map(lambda rows: np.array(rows, dtype=np.float64).reshape(-1, d))
    )


# --- pareto_ranks --------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(point_sets())
def test_ranks_match_brute_force_with_ties_and_duplicates(points):
    assert pareto_ranks(points).tolist() == brute_force_ranks(points).tolist()


@pytest.mark.parametrize("d", [2, 3, 4, 6])
def test_ranks_match_moocore_on_random_sets_larger_than_a_block(d):
    rng = np.random.default_rng(d)
    # Rounded to force ties across block boundaries; 700 rows span three blocks.
    points = np.round(rng.normal(size=(700, d)), 1)
    ranks = pareto_ranks(points)
    assert ranks.dtype == np.int64
    np.testing.assert_array_equal(ranks, moocore.pareto_rank(points, maximise=True))
    assert ranks.max() > 2


def test_duplicates_share_rank_and_do_not_dominate_each_other():
    points = np.array([[1.0, 1.0], [1.0, 1.0], [0.5, 0.5], [0.5, 0.5], [2.0, 0.0]])
    assert pareto_ranks(points).tolist() == [0, 0, 1, 1, 0]


def test_ranks_of_a_single_point_and_of_no_points():
    assert pareto_ranks([[3.0, 1.0]]).tolist() == [0]
    assert pareto_ranks(np.empty((0, 3))).shape == (0,)


def test_a_tiny_improvement_lost_in_the_sum_still_dominates():
    # The sums are equal in float64; the lexicographic tie-break must keep the order right.
    points = np.array([[1.0, 0.0], [1.0, 1e-20]])
    assert pareto_ranks(points).tolist() == [1, 0]


@pytest.mark.parametrize("bad", [np.array([1.0, 2.0]), np.array([[np.nan, 1.0]]),
                                 np.array([[np.inf, 1.0], [1.0, 2.0]])])
def test_ranks_reject_bad_points(bad):
    with pytest.raises(SearchError, match="points"):
        pareto_ranks(bad)


def test_non_finite_error_counts_and_shows_an_example():
    with pytest.raises(SearchError, match=r"2 value\(s\) are NaN or infinite, e.g. at \(0, 1\)"):
        pareto_ranks([[1.0, np.nan], [np.inf, 0.0]])


# --- hypervolume ---------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(point_sets(max_points=9, max_dims=4, grid=6))
def test_hypervolume_matches_inclusion_exclusion(points):
    reference = np.ones(points.shape[1])
    expected = inclusion_exclusion_hypervolume(points, reference)
    assert hypervolume(points, reference) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_hypervolume_matches_optuna_on_random_fronts(d):
    rng = np.random.default_rng(100 + d)
    # Points near a concave sphere-like front plus dominated filler.
    direction = np.abs(rng.normal(size=(60, d)))
    front = direction / np.linalg.norm(direction, axis=1, keepdims=True)
    points = np.vstack([front, front[:20] * rng.uniform(0.5, 0.99, size=(20, 1))])
    reference = np.full(d, 0.05)
    inside = points[np.all(points > reference, axis=1)]
    expected = compute_hypervolume(-inside, -reference)
    assert hypervolume(points, reference) == pytest.approx(expected, rel=1e-10)
    assert hypervolume(points, reference) > 0


def test_hypervolume_ignores_points_not_strictly_better_than_the_reference():
    reference = np.array([0.0, 0.0])
    assert hypervolume([[2.0, 0.0], [-1.0, 5.0]], reference) == 0.0
    assert hypervolume([[2.0, 0.0], [1.0, 1.0]], reference) == 1.0
    assert hypervolume(np.empty((0, 2)), reference) == 0.0


def test_hypervolume_with_one_objective_is_the_best_gain():
    assert hypervolume([[0.3], [0.7], [0.5]], [0.2]) == pytest.approx(0.5)


def test_hypervolume_monte_carlo_on_a_five_objective_front():
    rng = np.random.default_rng(7)
    points = rng.uniform(0.2, 1.0, size=(6, 5))
    reference = np.zeros(5)
    samples = rng.uniform(0.0, 1.0, size=(200_000, 5))
    covered = np.zeros(len(samples), dtype=bool)
    for p in points:
        covered |= np.all(samples <= p, axis=1)
    assert hypervolume(points, reference) == pytest.approx(covered.mean(), abs=0.01)


def test_hypervolume_rejects_shape_mismatch_and_too_many_objectives():
    with pytest.raises(SearchError, match="reference must have one value per objective"):
        hypervolume([[1.0, 2.0]], [0.0])
    with pytest.raises(SearchError, match="1 to 6 objectives, got 7"):
        hypervolume(np.ones((2, 7)), np.zeros(7))


# --- greedy hypervolume subset --------------------------------------------------------------
def brute_force_greedy(points, reference, k, base):
    """Plain greedy: add the point with the largest exact gain (ties: lowest index)."""
    chosen: list[int] = []
    for _ in range(k):
        held = np.vstack([base, points[chosen]])
        current = hypervolume(held, reference) if len(held) else 0.0
        gains = [(-1.0 if i in chosen else hypervolume(np.vstack([held, points[i]]), reference)
                  - current) for i in range(len(points))]
        best = int(np.argmax(gains))
        if gains[best] <= 0:
            break
        chosen.append(best)
    return chosen


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 4).flatmap(lambda d: st.tuples(
    st.lists(st.lists(st.integers(0, 8), min_size=d, max_size=d), min_size=1, max_size=25),
    st.lists(st.lists(st.integers(0, 8), min_size=d, max_size=d), min_size=0, max_size=6),
    st.integers(1, 8))))
def test_greedy_subset_matches_plain_greedy(case):
    rows, base_rows, k = case
    d = len(rows[0])
    points = np.array(rows, dtype=np.float64)
    base = np.array(base_rows, dtype=np.float64).reshape(-1, d)
    reference = np.zeros(d)
    assert greedy_hypervolume_subset(points, reference, k, base=base) == \
        brute_force_greedy(points, reference, k, base)


@settings(max_examples=80, deadline=None)
@given(point_sets(max_points=40, max_dims=4, grid=4), st.integers(1, 7))
def test_update_front_follows_the_rank_zero_points_batch_by_batch(points, batch):
    front = np.empty((0, points.shape[1]))
    for start in range(0, len(points), batch):
        new = points[start:start + batch]
        kept, added = update_front(front, new)
        front = np.vstack([front[kept], new[added]])
    expected = points[pareto_ranks(points) == 0] if len(points) else points
    assert sorted(map(tuple, front)) == sorted(map(tuple, expected))


def test_greedy_subset_stops_when_nothing_adds_volume():
    points = np.array([[1.0, 1.0], [0.5, 0.5], [1.0, 1.0], [-1.0, 3.0]])
    # The duplicate and the dominated point add nothing; the last is below the reference.
    assert greedy_hypervolume_subset(points, [0.0, 0.0], 4) == [0]
    assert greedy_hypervolume_subset(points, [0.0, 0.0], 4, base=[[2.0, 2.0]]) == []


def test_greedy_subset_on_a_real_front_is_spread_out():
    angles = np.linspace(0.0, np.pi / 2, 101)
    front = np.column_stack([np.cos(angles), np.sin(angles)])
    chosen = sorted(greedy_hypervolume_subset(front, [0.0, 0.0], 3))
    # The quarter circle's best 3-point staircase sits near 22.5, 45 and 67.5 degrees.
    assert chosen[1] == 50 and 20 <= chosen[0] <= 30 and 70 <= chosen[2] <= 80


# --- picks on the front --------------------------------------------------------------------
def test_knee_is_the_largest_minimum_normalised_gain():
    front = np.array([[1.0, 0.0], [0.8, 0.5], [0.55, 0.6], [0.0, 1.0]])
    # gains (ideal 1,1; low 0,0): min gains 0, 0.5, 0.55, 0 -> row 2.
    assert knee_point(front) == 2
    # Against a reference the second objective is rescaled: gains of row 1 become
    # (0.8-0.5)/0.5 = 0.6 and (0.5-0.4)/0.6 = 0.17; row 2 gets 0.1 and 0.33.
    assert knee_point(front, reference=[0.5, 0.4]) == 1


def test_knee_ties_go_to_the_larger_total_gain_then_the_first_row():
    assert knee_point([[0.5, 0.5], [0.5, 0.9], [0.5, 0.9]]) == 1


def test_knee_ignores_a_constant_objective_and_handles_a_reference_above_the_front():
    front = np.array([[1.0, 3.0, 0.2], [0.5, 3.0, 0.6], [0.0, 3.0, 0.9]])
    assert knee_point(front) == 1
    # No point beats the reference in objective 0: normalise it by the front's range.
    assert knee_point(front, reference=[2.0, 3.0, 0.0]) == 1


def test_preference_moves_the_pick_along_the_front():
    front = np.array([[1.0, 0.0], [0.8, 0.5], [0.5, 0.8], [0.0, 1.0]])
    assert closest_to_preference(front, [1.0, 0.0]) == 0
    assert closest_to_preference(front, [0.7, 0.3]) == 1
    assert closest_to_preference(front, [0.3, 0.7]) == 2
    assert closest_to_preference(front, [0.0, 1.0]) == 3
    assert closest_to_preference(front, [2.0, 2.0]) == knee_point(front)


@pytest.mark.parametrize("preference,match", [([0.0, 0.0], "not all 0"), ([-1.0, 2.0], ">= 0"),
                                              ([1.0], "one value per objective")])
def test_preference_rejects_bad_weights(preference, match):
    with pytest.raises(SearchError, match=match):
        closest_to_preference([[1.0, 0.0]], preference)


def test_picks_reject_an_empty_front():
    with pytest.raises(SearchError, match="front is empty"):
        knee_point(np.empty((0, 2)))


def test_docstring_examples_run():
    failures, tried = doctest.testmod(pareto, verbose=False)
    assert tried >= 4 and failures == 0

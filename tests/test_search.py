"""Weight search: constraint parsing, the simplex map, results and their invariants."""

from __future__ import annotations

import doctest
import importlib
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import fusion
from fusion import Formula, SearchError, evaluate, evaluate_many, load_logs, search
from fusion.errors import FormulaError
from fusion.pareto import closest_to_preference, hypervolume, knee_point, pareto_ranks
from fusion.search import Constraint, parse_constraint, unit_to_simplex
from tests.conftest import make_log_frame

search_module = importlib.import_module("fusion.search")

OBJECTIVES = [("click", "gauc"), ("dwell", "ndcg@10"), ("like", "gauc")]
COLUMNS = [f"{o}:{m}" for o, m in OBJECTIVES]
# Scores are rounded to 0.01, so some are 0: the product's logs need alphas.
ALPHAS = {"click": 0.01, "dwell": 1.0, "like": 0.01}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    path = tmp_path_factory.mktemp("logs") / "logs.parquet"
    make_log_frame(120, seed=3, min_size=4, max_size=30,
                   objectives=("click", "dwell", "like")).to_parquet(path)
    return load_logs(path)


def run(logs, **settings):
    defaults = dict(kind="product", objectives=OBJECTIVES, budget=40, seed=0, alphas=ALPHAS,
                    batch_size=10)
    return search(logs, **{**defaults, **settings})


# --- constraints -----------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("conversion:gauc>=0.995*baseline", Constraint("conversion", "gauc", ">=", 0.995, True)),
    (" conversion : gauc >= 0.995 * baseline ",
     Constraint("conversion", "gauc", ">=", 0.995, True)),
    ("conversion:gauc>=baseline*0.9", Constraint("conversion", "gauc", ">=", 0.9, True)),
    ("click:gauc<=baseline", Constraint("click", "gauc", "<=", 1.0, True)),
    ("click:ndcg@10>=0.31", Constraint("click", "ndcg@10", ">=", 0.31, False)),
    ("click:NDCG@10 <= 3e-1", Constraint("click", "ndcg@10", "<=", 0.3, False)),
    ("click:top@5>=-.5", Constraint("click", "top@5", ">=", -0.5, False)),
])
def test_constraints_parse(text, expected):
    parsed = parse_constraint(text, ["click", "conversion"])
    assert parsed == expected
    assert parse_constraint(str(parsed), ["click", "conversion"]) == parsed


@pytest.mark.parametrize("text,message", [
    ("click gauc >= 0.5", "malformed constraint"),
    ("click:gauc", "malformed constraint"),
    ("click:gauc > 0.5", "operator '>' is not supported; use >= or <="),
    ("click:gauc == 0.5", "operator '==' is not supported"),
    ("click:gauc >= abc", "bound 'abc' is not a number"),
    ("click:gauc >= __import__('os').getcwd()", "is not a number"),
    ("click:gauc >= 0.9*baseline+1", "is not a number"),
    ("click:gauc >= 1e999", "is not finite"),
    ("views:gauc >= 0.5", "unknown objective 'views'"),
    ("click:ndcg@0 >= 0.5", "K >= 1"),
    ("click:recall >= 0.5", "unknown metric"),
])
def test_malformed_constraints_raise_a_specific_search_error(text, message):
    with pytest.raises(SearchError, match="constraint") as caught:
        parse_constraint(text, ["click", "conversion"])
    assert message in str(caught.value)


def test_constraint_holds_and_never_holds_for_an_undefined_metric():
    at_least = Constraint("click", "gauc", ">=", 0.5, True)
    values = np.array([0.29, 0.3, 0.31, np.nan])
    assert at_least.holds(values, {"click:gauc": 0.6}).tolist() == [False, True, True, False]
    at_most = Constraint("click", "gauc", "<=", 0.3, False)
    assert at_most.holds(values, {}).tolist() == [True, True, False, False]


# --- the simplex map -------------------------------------------------------------------------
def test_unit_to_simplex_is_uniform_on_the_simplex():
    u = np.random.default_rng(0).random((20_000, 3))
    weights = unit_to_simplex(u)
    assert weights.shape == (20_000, 4)
    assert np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    # Each coordinate of a uniform point of the 4-simplex is Beta(1, 3).
    for j in range(4):
        assert stats.kstest(weights[:, j], stats.beta(1, 3).cdf).pvalue > 1e-3


def test_unit_to_simplex_corners_and_docstring():
    assert unit_to_simplex(np.array([[0.0, 0.0]])).tolist() == [[0.0, 0.0, 1.0]]
    assert unit_to_simplex(np.array([[1.0, 0.3]])).tolist() == [[1.0, 0.0, 0.0]]
    failures, tried = doctest.testmod(search_module, verbose=False)
    assert tried >= 2 and failures == 0


# --- results ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["auto", "sobol", "random"])
def test_same_seed_gives_identical_candidates(logs, method):
    first = run(logs, method=method, seed=7)
    again = run(logs, method=method, seed=7)
    other = run(logs, method=method, seed=8)
    columns = [c for c in first.candidates.columns if c != "elapsed_s"]
    pd.testing.assert_frame_equal(first.candidates[columns], again.candidates[columns])
    assert not np.array_equal(first.candidates["w:click"], other.candidates["w:click"])
    assert len(first.candidates) == 40


def test_candidate_metrics_are_exactly_those_of_evaluate_many_and_of_their_formula(logs):
    result = run(logs, method="sobol", constraints=["like:top@5>=0.5*baseline"])
    frame = result.candidates
    weights = frame[[f"w:{o}" for o in logs.objectives]].to_numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    expected = evaluate_many(logs, "product", weights=weights, alphas=ALPHAS,
                             metrics=["gauc", "ndcg@10", "top@5"])
    for column in COLUMNS + ["like:top@5"]:
        np.testing.assert_array_equal(frame[column].to_numpy(), expected[column].to_numpy())
    one = evaluate(logs, result.formula(int(frame["candidate_id"].iloc[5])),
                   metrics=["gauc", "ndcg@10"])
    assert one["dwell", "ndcg@10"] == frame["dwell:ndcg@10"].iloc[5]


def test_formula_of_an_unknown_candidate_raises(logs):
    result = run(logs, method="sobol", budget=10)
    with pytest.raises(fusion.StudyError, match="no candidate 10: ids run from 0 to 9"):
        result.formula(10)


def test_infeasible_candidates_are_kept_marked_and_ranked_minus_one(logs):
    result = run(logs, method="random", constraints=["like:gauc>=1.0*baseline", "click:gauc<=0.99"])
    frame = result.candidates
    limit = result.baseline_metrics["like:gauc"]
    expected = (frame["like:gauc"] >= limit) & (frame["click:gauc"] <= 0.99)
    assert frame["feasible"].tolist() == expected.tolist()
    assert 0 < expected.sum() < len(frame)
    assert (frame.loc[~expected, "pareto_rank"] == -1).all()
    feasible = frame[expected]
    assert feasible["pareto_rank"].tolist() == pareto_ranks(feasible[COLUMNS].to_numpy()).tolist()
    assert result.front["candidate_id"].tolist() == feasible.loc[
        feasible["pareto_rank"] == 0, "candidate_id"].tolist()
    assert result.constraints == ["like:gauc>=1.0*baseline", "click:gauc<=0.99"]


def test_no_feasible_candidate_gives_an_empty_front_and_no_picks(logs):
    result = run(logs, method="sobol", budget=20, constraints=["click:gauc>=2"])
    assert not result.candidates["feasible"].any()
    assert len(result.front) == 0 and result.knee_id is None and result.preferred_id is None
    assert result.hypervolume == 0.0 and result.reference_source == "baseline"


def test_an_undefined_metric_makes_candidates_infeasible_not_a_crash(tmp_path):
    frame = make_log_frame(40, seed=1, objectives=("click", "like"))
    frame["label_like"] = 0          # no positive: like gauc is undefined everywhere
    path = tmp_path / "no_likes.parquet"
    frame.to_parquet(path)
    no_likes = load_logs(path)
    settings = dict(objectives=[("click", "gauc"), ("like", "gauc")], budget=20, batch_size=10,
                    alphas={"click": 0.01, "like": 0.01}, progress=lambda *a: None)
    result = search(no_likes, "product", **settings)
    assert np.isnan(result.baseline_metrics["like:gauc"])
    assert not result.candidates["feasible"].any() and result.hypervolume == 0.0
    assert result.history["hypervolume"].tolist() == [0.0, 0.0] and result.knee_id is None
    with pytest.raises(SearchError, match="the baseline's 'like:gauc' is undefined"):
        search(no_likes, "product", reference_point="baseline", **settings)
    with pytest.raises(SearchError, match="relative to the baseline, whose value is undefined"):
        search(no_likes, "product", constraints=["like:gauc>=0.9*baseline"], **settings)


def test_default_baseline_is_equal_weights_and_its_metrics_are_reported(logs):
    result = run(logs, method="sobol", budget=10)
    assert result.baseline_source == "equal weights (default)"
    assert result.baseline_formula == Formula.product({o: 1 / 3 for o in logs.objectives}, ALPHAS)
    expected = evaluate(logs, result.baseline_formula, metrics=["gauc", "ndcg@10"])
    assert result.baseline_metrics == {c: expected[tuple(c.split(":"))] for c in COLUMNS}


def test_alphas_not_given_take_their_defaults_for_the_logs(logs):
    defaults = fusion.formulas.default_alphas(logs)
    assert defaults["click"] == 1e-6  # click scores reach 0: the plain log is undefined
    result = run(logs, method="sobol", budget=10, alphas={"dwell": 2.0})
    assert result.baseline_formula.alphas == {**defaults, "dwell": 2.0}
    for candidate in result.candidates["candidate_id"]:
        assert result.formula(candidate).alphas == {**defaults, "dwell": 2.0}


def test_a_given_baseline_formula_or_config_is_used_and_named(logs):
    production = Formula.product({"click": 0.8, "dwell": 0.1, "like": 0.1}, ALPHAS)
    result = run(logs, method="sobol", budget=10, baseline=production)
    assert result.baseline_formula == production and result.baseline_source == "formula"
    config = fusion.export_config(production, logs, name="prod-v3")
    result = run(logs, method="sobol", budget=10, baseline=config)
    assert result.baseline_source == "config 'prod-v3'"
    assert result.baseline_formula.weights == pytest.approx(production.weights)


def test_reference_point_settings(logs):
    nadir = run(logs, method="sobol", reference_point="nadir")
    front = nadir.front[COLUMNS].to_numpy()
    assert nadir.reference_source == "nadir"
    assert list(nadir.reference_point.values()) == front.min(axis=0).tolist()
    assert nadir.hypervolume == hypervolume(nadir.candidates.loc[
        nadir.candidates["feasible"], COLUMNS].to_numpy(), front.min(axis=0))

    given = dict(zip(COLUMNS, (front.min(axis=0) - 0.01).tolist()))
    result = run(logs, method="sobol", reference_point=given)
    assert result.reference_source == "given" and result.reference_point == given
    assert result.hypervolume > nadir.hypervolume
    as_list = run(logs, method="sobol", reference_point=list(given.values()))
    assert as_list.hypervolume == result.hypervolume

    default = run(logs, method="sobol")
    base = np.array([default.baseline_metrics[c] for c in COLUMNS])
    beats = bool(np.any(np.all(front > base, axis=1)))
    assert default.reference_source == ("baseline" if beats else "nadir")


def test_knee_and_preferred_points_are_front_picks(logs):
    result = run(logs, method="sobol", preference={"click": 3.0, "dwell:ndcg@10": 1.0},
                 reference_point="nadir")
    front = result.front[COLUMNS].to_numpy()
    reference = list(result.reference_point.values())
    ids = result.front["candidate_id"].tolist()
    assert result.knee_id == ids[knee_point(front, reference)]
    assert result.preferred_id == ids[closest_to_preference(front, [3.0, 1.0, 0.0], reference)]
    assert result.settings["preference"] == {"click:gauc": 3.0, "dwell:ndcg@10": 1.0,
                                             "like:gauc": 0.0}


def test_history_and_progress_follow_every_batch(logs):
    calls = []
    result = run(logs, method="auto", budget=45, progress=lambda *a: calls.append(a),
                 reference_point="nadir")
    assert [c[0] for c in calls] == [10, 20, 30, 40, 45]
    assert all(c[1] == 45 for c in calls) and all(c[2] >= 0 for c in calls)
    history = result.history
    assert history["evaluations"].tolist() == [10, 20, 30, 40, 45]
    assert history["elapsed_s"].is_monotonic_increasing
    assert np.all(np.diff(history["hypervolume"]) >= 0)
    assert history["hypervolume"].iloc[-1] == result.hypervolume
    assert calls[-1][2] == result.hypervolume
    assert result.complete


@pytest.mark.parametrize("method", ["auto", "random"])
def test_max_seconds_stops_before_a_batch_would_end_late(logs, monkeypatch, method):
    full = run(logs, method=method, budget=60)

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return evaluate_many(*args, **kwargs)

    monkeypatch.setattr(search_module, "evaluate_many", slow)
    started = time.perf_counter()
    limited = run(logs, method=method, budget=60, max_seconds=1.0)
    assert time.perf_counter() - started < 3.0
    assert 10 <= len(limited.candidates) <= 30 and not limited.complete
    columns = [c for c in full.candidates.columns if c not in ("elapsed_s", "pareto_rank")]
    pd.testing.assert_frame_equal(limited.candidates[columns],
                                  full.candidates[columns].iloc[:len(limited.candidates)])


def test_searched_alphas_stay_within_bounds_and_are_log_uniform(logs):
    result = run(logs, method="random", budget=60, search_alphas=True,
                 bounds={"click": (0.01, 1.0), "like": (0.02, 0.5)})
    frame = result.candidates
    assert list(result.settings["alpha_objectives"]) == ["click", "like"]
    assert frame["alpha:click"].between(0.01, 1.0).all()
    assert frame["alpha:like"].between(0.02, 0.5).all()
    assert "alpha:dwell" not in frame
    # Log-uniform: about half the draws fall below the geometric midpoint.
    assert 0.3 < (frame["alpha:click"] < 0.1).mean() < 0.7
    formula = result.formula(3)
    assert formula.alphas == {"click": frame["alpha:click"].iloc[3], "dwell": 1.0,
                              "like": frame["alpha:like"].iloc[3]}
    assert evaluate(logs, formula, metrics=["gauc"])["like", "gauc"] == frame["like:gauc"].iloc[3]


def test_default_alpha_bounds_scale_with_the_scores(logs):
    result = run(logs, method="sobol", budget=10, search_alphas=True)
    for name in logs.objectives:
        mean = float(np.abs(logs.scores[:, logs.objective_index(name)]).mean())
        assert result.settings["bounds"][name] == pytest.approx([1e-4 * mean, mean])


def test_the_default_baseline_takes_the_midpoint_of_searched_alphas(logs):
    result = run(logs, method="sobol", budget=10, search_alphas=True, alphas={"dwell": 1.0},
                 bounds={"click": (0.01, 1.0), "like": (0.04, 0.16)})
    assert result.baseline_formula.alphas == pytest.approx(
        {"click": 0.1, "dwell": 1.0, "like": 0.08})


def test_one_objective_has_nothing_to_search_unless_its_alpha_is_searched(tmp_path):
    path = tmp_path / "one.parquet"
    make_log_frame(30, objectives=("click",)).to_parquet(path)
    single = load_logs(path)
    with pytest.raises(SearchError, match="one objective \\('click'\\)"):
        search(single, "product", objectives=[("click", "gauc")], alphas={"click": 0.01})
    result = search(single, "product", objectives=[("click", "gauc")], budget=10, method="sobol",
                    search_alphas=True, bounds={"click": (0.01, 1.0)})
    assert result.candidates["w:click"].eq(1.0).all()
    assert result.candidates["alpha:click"].nunique() == 10


def test_other_kinds_are_searched_too(logs):
    ranked = run(logs, kind="rank", method="sobol", budget=10, alphas=None, k=10.0)
    assert ranked.formula(0).kind == "rank" and ranked.formula(0).k == 10.0
    summed = run(logs, kind="sum", method="sobol", budget=10, alphas=None,
                 transforms={"dwell": "zscore"})
    assert summed.formula(0).transforms == {"click": "identity", "dwell": "zscore",
                                            "like": "identity"}


def test_auto_beats_random_at_equal_budget_on_small_logs(logs):
    auto = run(logs, method="auto", budget=80, reference_point="nadir")
    shared = np.array(list(auto.reference_point.values())) - 0.02
    scores = {}
    for method in ("auto", "random"):
        result = auto if method == "auto" else run(logs, method=method, budget=80)
        points = result.candidates.loc[result.candidates["feasible"], COLUMNS].to_numpy()
        scores[method] = hypervolume(points, shared)
    assert scores["auto"] > scores["random"]


# --- bad settings --------------------------------------------------------------------------
@pytest.mark.parametrize("settings,error,message", [
    (dict(method="grid"), SearchError, "method 'grid' is not one of"),
    (dict(budget=0), SearchError, "budget must be a whole number >= 1"),
    (dict(budget=2.5), SearchError, "budget must be a whole number"),
    (dict(seed=-1), SearchError, "seed must be a whole number >= 0"),
    (dict(objectives=[]), SearchError, "non-empty list"),
    (dict(objectives=[("views", "gauc")]), SearchError, "unknown objective 'views'"),
    (dict(objectives=[("click", "ndcg")]), SearchError, "K >= 1"),
    (dict(objectives=[("click", "gauc"), "click:gauc"]), SearchError, "repeated"),
    (dict(bounds={"click": (0.1, 1)}), SearchError, "need search_alphas=True"),
    (dict(search_alphas=True, bounds={"click": (1.0, 0.1)}), SearchError, "finite low < high"),
    (dict(search_alphas=True, bounds={"click": (-0.5, 0.1)}), SearchError, "smallest score is 0.0"),
    (dict(search_alphas=True, bounds={"views": (0.1, 1)}), SearchError, "'views' takes no alpha"),
    (dict(kind="rank", alphas=None, search_alphas=True), SearchError, "no alpha to search"),
    (dict(preference=[1.0]), SearchError, "1 weight(s) for 3 searched metrics"),
    (dict(preference={"click": -1}), SearchError, ">= 0 and not all 0"),
    (dict(preference={"views": 1}), SearchError, "names 0 searched metric(s)"),
    (dict(reference_point="ideal"), SearchError, "is not 'baseline', 'nadir'"),
    (dict(reference_point={"click:gauc": 0.5}), SearchError,
     "missing ['dwell:ndcg@10', 'like:gauc']"),
    (dict(baseline="prod"), SearchError, "baseline must be a Formula or a FusionConfig"),
    (dict(alphas={"click": 0.0}), FormulaError, "search: alphas: objective 'click'"),
    (dict(constraints="click:gauc>=0.5*baselin"), SearchError, "is not a number"),
    (dict(max_seconds=0), SearchError, "max_seconds must be a number of seconds > 0"),
    (dict(max_seconds=True), SearchError, "max_seconds must be"),
])
def test_bad_settings_raise_before_any_evaluation(logs, monkeypatch, settings, error, message):
    monkeypatch.setattr(search_module, "evaluate_many", _fail_if_called)
    with pytest.raises(error) as caught:
        run(logs, **settings)
    assert message in str(caught.value)


def _fail_if_called(*args, **kwargs):
    raise AssertionError("evaluated before the settings were checked")


def test_logs_must_be_a_logset():
    with pytest.raises(SearchError, match="logs must be a LogSet"):
        search("logs.parquet", "product", objectives=OBJECTIVES)

"""evaluate / evaluate_many: against a per-group scikit-learn oracle on tied data, chunking,
user grouping, shared work, baselines, bootstrap intervals and input checks."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

import fusion
from fusion.errors import FormulaError, FusionError, InvalidValueError, MetricError
from fusion.evaluate import EvaluationResult, evaluate, evaluate_many
from fusion.formulas import Formula

from .conftest import make_log_frame

# The package exports the function evaluate under the module's name.
evaluate_module = importlib.import_module("fusion.evaluate")

OBJECTIVES = ("click", "dwell", "like")
# Weights with no small rational relation: fused ties come only from tied inputs.
W = {"click": 0.6180339887, "dwell": 0.2718281828, "like": 0.1414213562}
FORMULAS = {
    "sum": Formula.sum(W, transforms={"dwell": "percentile"}),
    "product": Formula.product(W, alphas={"click": 0.05, "dwell": 1.0, "like": 0.05}),
    "rank": Formula.rank(W, k=5),
}
METRICS = ["gauc", "ndcg@3", "ndcg@10", "top@1", "top@5", "auc"]


def _tied_frame(n_requests: int, seed: int) -> pd.DataFrame:
    frame = make_log_frame(n_requests, seed=seed, objectives=OBJECTIVES)
    # One decimal: many tied scores inside a request, so every tie rule is exercised.
    for name in ("click", "like"):
        frame[f"pred_{name}"] = frame[f"pred_{name}"].round(1)
    frame["pred_dwell"] = frame["pred_dwell"].round(-1)
    return frame


def _load(frame: pd.DataFrame, path: Path) -> fusion.LogSet:
    frame.to_parquet(path)
    return fusion.load_logs(path)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> fusion.LogSet:
    loaded = _load(_tied_frame(50, seed=11), tmp_path_factory.mktemp("evaluate") / "logs.parquet")
    assert loaded.schema.objective("dwell").kind == "graded"
    return loaded


# --- oracle ---------------------------------------------------------------------------------
def _top_oracle(labels: np.ndarray, fused: np.ndarray, k: int) -> float:
    """Expected label sum in the first k slots over all orders of tied items."""
    total, position = 0.0, 0
    for value in np.unique(fused)[::-1]:
        block = labels[fused == value]
        inside = max(0, min(k, position + block.size) - position)
        total += block.mean() * inside
        position += block.size
    return total


def _group_values(logs: fusion.LogSet, fused: np.ndarray, offsets: np.ndarray, rows: np.ndarray,
                  objective: str, metric: str) -> list[tuple[float, float]]:
    """(value, weight) of each group that counts, scored with scikit-learn where it can."""
    spec = logs.schema.objective(objective)
    label_all = logs.labels[:, logs.objective_index(objective)].astype(np.float64)
    out = []
    for g in range(len(offsets) - 1):
        group_rows = rows[offsets[g]:offsets[g + 1]]
        f, label = fused[group_rows], label_all[group_rows]
        positive = label > spec.positive_threshold
        if metric == "gauc":
            if 0 < positive.sum() < len(positive):
                out.append((roc_auc_score(positive, f), float(len(f))))
            continue
        name, k = metric.split("@")
        if name == "ndcg":
            gain = np.log1p(label) if spec.gain == "log1p" else label
            if gain.sum() > 0:
                value = 1.0 if len(f) == 1 else ndcg_score([gain], [f], k=int(k), ignore_ties=False)
                out.append((value, 1.0))
        else:
            out.append((_top_oracle(label, f, int(k)), 1.0))
    return out


def _oracle(logs: fusion.LogSet, fused: np.ndarray, metric: str, objective: str,
            group_by: str = "request") -> tuple[float, int]:
    label = logs.labels[:, logs.objective_index(objective)]
    if metric == "auc":
        return roc_auc_score(label > 0, fused), 1
    if group_by == "request":
        rows, offsets = np.arange(logs.n_rows), logs.group_offsets
    else:
        users = np.asarray(logs.users.codes)
        rows = np.argsort(users, kind="stable")
        offsets = np.concatenate(([0], np.flatnonzero(np.diff(users[rows])) + 1, [logs.n_rows]))
    values = _group_values(logs, fused, offsets, rows, objective, metric)
    if not values:
        return float("nan"), 0
    value, weight = np.array(values).T
    return float((value * weight).sum() / weight.sum()), len(values)


@pytest.mark.parametrize("kind", FORMULAS)
def test_evaluate_equals_the_per_request_sklearn_oracle_on_tied_data(
    logs: fusion.LogSet, kind: str
) -> None:
    formula = FORMULAS[kind]
    result = evaluate(logs, formula, metrics=METRICS)
    frame = result.to_frame().set_index(["objective", "metric"])
    fused = formula.fuse(logs)
    for objective in OBJECTIVES:
        for metric in METRICS:
            expected, used = _oracle(logs, fused, metric, objective)
            assert result[objective, metric] == pytest.approx(expected, rel=1e-12, abs=1e-12)
            assert frame.loc[(objective, metric), "groups_used"] == used
            if metric != "auc":
                assert frame.loc[(objective, metric), "groups_skipped"] == logs.n_requests - used


def test_group_by_user_equals_the_per_user_oracle(logs: fusion.LogSet) -> None:
    formula = FORMULAS["rank"]
    result = evaluate(logs, formula, metrics=["gauc", "ndcg@10", "top@5"], group_by="user")
    assert result.group_by == "user"
    fused = formula.fuse(logs)
    for objective in OBJECTIVES:
        for metric in result.metrics:
            expected, used = _oracle(logs, fused, metric, objective, group_by="user")
            assert result[objective, metric] == pytest.approx(expected, rel=1e-12)
            assert result.groups_used[logs.objective_index(objective),
                                      result.metrics.index(metric)] == used
    assert result.groups_used[0, 2] + result.groups_skipped[0, 2] == logs.n_users
    # The user order is computed once per LogSet.
    layout = evaluate_module._USER_LAYOUTS[logs]
    evaluate(logs, formula, group_by="user")
    assert evaluate_module._USER_LAYOUTS[logs] is layout


def test_group_by_user_rejects_requests_of_several_users(tmp_path: Path) -> None:
    frame = make_log_frame(6, seed=1, min_size=3, objectives=("click",))
    first = frame["request_id"] == frame["request_id"].iloc[0]
    frame.loc[first, "user_id"] = np.arange(first.sum()) + 1000
    logs = _load(frame, tmp_path / "mixed.parquet")
    with pytest.raises(InvalidValueError, match=r"1 request\(s\) hold rows of several users"):
        evaluate(logs, Formula.sum({"click": 1.0}), group_by="user")
    evaluate(logs, Formula.sum({"click": 1.0}))


@pytest.mark.parametrize("group_by", ["request", "user"])
def test_chunked_equals_unchunked(logs: fusion.LogSet, group_by: str) -> None:
    formula = FORMULAS["sum"]
    whole = evaluate(logs, formula, metrics=METRICS, group_by=group_by, chunk_rows=10**9)
    tiny = evaluate(logs, formula, metrics=METRICS, group_by=group_by, chunk_rows=40)
    np.testing.assert_allclose(tiny.values, whole.values, rtol=1e-12)
    np.testing.assert_array_equal(tiny.groups_used, whole.groups_used)
    np.testing.assert_array_equal(tiny.groups_skipped, whole.groups_skipped)


def test_single_class_everywhere_gives_nan_and_counts_skips(tmp_path: Path) -> None:
    frame = make_log_frame(5, seed=2, objectives=("click",))
    frame["label_click"] = 0
    logs = _load(frame, tmp_path / "negatives.parquet")
    result = evaluate(logs, Formula.sum({"click": 1.0}), metrics=["gauc", "ndcg@5", "top@5", "auc"])
    assert np.isnan(result["click", "gauc"]) and np.isnan(result["click", "ndcg@5"])
    assert np.isnan(result["click", "auc"])
    assert result["click", "top@5"] == 0.0
    np.testing.assert_array_equal(result.groups_used, [[0, 0, 5, 0]])
    np.testing.assert_array_equal(result.groups_skipped, [[5, 5, 0, 1]])


# --- evaluate_many ------------------------------------------------------------------------
def _weights(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(len(OBJECTIVES)), size=n)
    weights[1, 0] = 0.0   # an objective left out
    weights[2] *= 7.5     # not on the simplex
    return weights


@pytest.mark.parametrize("kind", FORMULAS)
@pytest.mark.parametrize("group_by", ["request", "user"])
def test_evaluate_many_rows_equal_evaluate_exactly(logs: fusion.LogSet, kind: str,
                                                   group_by: str) -> None:
    template = FORMULAS[kind]
    params = {"alphas": template.alphas or None, "transforms": template.transforms or None,
              "k": template.k}
    weights = _weights(0, 5)
    frame = evaluate_many(logs, kind, weights, metrics=METRICS, group_by=group_by,
                          chunk_rows=500, **params)
    assert list(frame.columns[:3]) == [f"w:{o}" for o in OBJECTIVES]
    assert list(frame.columns[3:]) == [f"{o}:{m}" for o in OBJECTIVES for m in METRICS]
    np.testing.assert_array_equal(frame[[f"w:{o}" for o in OBJECTIVES]].to_numpy(), weights)
    for c in range(len(weights)):
        formula = Formula.of(kind, dict(zip(OBJECTIVES, weights[c])), **params)
        single = evaluate(logs, formula, metrics=METRICS, group_by=group_by, chunk_rows=500)
        expected = single.to_frame()
        got = frame.iloc[c][[f"{o}:{m}" for o, m in zip(expected["objective"], expected["metric"])]]
        np.testing.assert_array_equal(got.to_numpy(dtype=float), expected["value"].to_numpy())


def test_evaluate_many_batches_candidates_without_changing_results(
    logs: fusion.LogSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = _weights(1, 7)
    together = evaluate_many(logs, "rank", weights, metrics=METRICS)
    # A budget that holds two candidates' fused scores at a time.
    monkeypatch.setattr(evaluate_module, "FUSED_BUDGET_BYTES", 2 * 8 * logs.n_rows)
    batched = evaluate_many(logs, "rank", weights, metrics=METRICS)
    pd.testing.assert_frame_equal(batched, together)


def test_evaluate_many_batches_beyond_the_kernels_candidates_per_call(
    logs: fusion.LogSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = _weights(4, 5)
    together = evaluate_many(logs, "product", weights, alphas=FORMULAS["product"].alphas)
    calls = []
    real = evaluate_module.combined_metric_sums

    def spy(features, weights, *args, **kwargs):
        calls.append(len(weights))
        return real(features, weights, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "candidates_per_call", lambda *_: 2)
    monkeypatch.setattr(evaluate_module, "combined_metric_sums", spy)
    batched = evaluate_many(logs, "product", weights, alphas=FORMULAS["product"].alphas)
    assert calls == [2, 2, 1]
    pd.testing.assert_frame_equal(batched, together)


def test_evaluate_many_reads_dataframes_by_objective_name(logs: fusion.LogSet) -> None:
    weights = _weights(2, 4)
    by_array = evaluate_many(logs, "sum", weights)
    named = pd.DataFrame(weights[:, ::-1], columns=list(OBJECTIVES)[::-1],
                         index=pd.Index([10, 11, 12, 13], name="candidate_id"))
    by_name = evaluate_many(logs, "sum", named)
    assert list(by_name.index) == [10, 11, 12, 13]
    np.testing.assert_array_equal(by_name.to_numpy(), by_array.to_numpy())
    prefixed = named.rename(columns=lambda o: f"w:{o}").assign(**{"click:gauc": 0.5, "note": "x"})
    np.testing.assert_array_equal(evaluate_many(logs, "sum", prefixed).to_numpy(),
                                  by_array.to_numpy())
    # Objectives a DataFrame leaves out weigh 0.
    partial = evaluate_many(logs, "sum", pd.DataFrame({"like": [1.0]}))
    assert partial.loc[0, "w:click"] == 0.0
    alone = evaluate(logs, Formula.sum({"like": 1.0}))
    assert partial.loc[0, "like:gauc"] == alone["like", "gauc"]


def test_evaluate_many_with_per_candidate_alphas(logs: fusion.LogSet) -> None:
    weights = _weights(3, 4)
    alphas = pd.DataFrame({"alpha:click": [0.05, 0.5, 0.05, 2.0], "alpha:like": [0.1] * 4,
                           "alpha:dwell": [1.0] * 4})
    frame = evaluate_many(logs, "product", weights, alphas=alphas, metrics=["gauc", "ndcg@5"])
    assert [c for c in frame.columns if c.startswith("alpha:")] == list(alphas.columns)
    for c in range(4):
        formula = Formula.product(dict(zip(OBJECTIVES, weights[c])),
                                  alphas={k[6:]: v for k, v in alphas.iloc[c].items()})
        single = evaluate(logs, formula, metrics=["gauc", "ndcg@5"])
        for objective in OBJECTIVES:
            for metric in ("gauc", "ndcg@5"):
                assert frame.loc[c, f"{objective}:{metric}"] == single[objective, metric]


# --- baseline and result objects -----------------------------------------------------------
def test_baseline_values_and_relative_deltas(logs: fusion.LogSet) -> None:
    formula, baseline = FORMULAS["product"], FORMULAS["rank"]
    result = evaluate(logs, formula, metrics=METRICS, baseline=baseline)
    alone = evaluate(logs, baseline, metrics=METRICS)
    np.testing.assert_array_equal(result.baseline_values, alone.values)
    np.testing.assert_array_equal(result.values, evaluate(logs, formula, metrics=METRICS).values)
    frame = result.to_frame()
    np.testing.assert_allclose(frame["delta"], frame["value"] / frame["baseline"] - 1, rtol=1e-12)
    assert result.baseline_formula == baseline
    plain = evaluate(logs, formula).to_frame()
    assert plain["baseline"].isna().all() and plain["delta"].isna().all()


def test_a_config_like_object_stands_for_its_formula(logs: fusion.LogSet) -> None:
    class Config:
        formula = FORMULAS["sum"]

    result = evaluate(logs, Config(), baseline=Config())
    np.testing.assert_array_equal(result.values, evaluate(logs, FORMULAS["sum"]).values)
    assert np.all(result.delta == 0)


def test_result_lookup_frame_and_dict(logs: fusion.LogSet) -> None:
    result = evaluate(logs, FORMULAS["sum"], metrics=["NDCG@10", "gauc"], baseline=FORMULAS["rank"])
    assert isinstance(result, EvaluationResult)
    assert result.metrics == ("ndcg@10", "gauc")
    assert result["click", "NDCG@10"] == result["click", "ndcg@10"]
    with pytest.raises(KeyError, match="share"):
        result["share", "gauc"]
    with pytest.raises(KeyError, match="top@10"):
        result["click", "top@10"]
    frame = result.to_frame()
    assert list(frame.columns) == ["objective", "metric", "value", "baseline", "delta",
                                   "groups_used", "groups_skipped", "ci_low", "ci_high",
                                   "delta_ci_low", "delta_ci_high"]
    assert len(frame) == 6 and frame["ci_low"].isna().all()
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert Formula.from_dict(data["formula"]) == result.formula
    assert Formula.from_dict(data["baseline"]) == result.baseline_formula
    assert data["metrics"][0]["objective"] == "click" and data["metrics"][0]["ci_low"] is None
    assert data["metrics"][0]["value"] == result["click", "ndcg@10"]
    with pytest.raises(ValueError, match="read-only"):
        result.values[0, 0] = 1.0


# --- bootstrap ----------------------------------------------------------------------------
def test_bootstrap_intervals_are_reproducible_and_bracket_the_values(
    logs: fusion.LogSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluate_module, "BOOTSTRAP_BLOCKS", 20)  # fewer kernel calls
    kwargs = {"metrics": ["gauc", "ndcg@5", "top@5", "auc"], "baseline": FORMULAS["sum"],
              "ci": 0.9, "n_boot": 100}
    first = evaluate(logs, FORMULAS["rank"], seed=3, **kwargs)
    again = evaluate(logs, FORMULAS["rank"], seed=3, **kwargs)
    other = evaluate(logs, FORMULAS["rank"], seed=4, **kwargs)
    frame = first.to_frame()
    pd.testing.assert_frame_equal(frame, again.to_frame())
    assert not np.array_equal(first.ci_low, other.ci_low, equal_nan=True)
    np.testing.assert_array_equal(first.values, evaluate(logs, FORMULAS["rank"], **{
        k: v for k, v in kwargs.items() if k not in ("ci", "n_boot")}).values)
    grouped = frame[frame["metric"] != "auc"]
    assert (grouped["ci_low"] <= grouped["value"]).all()
    assert (grouped["value"] <= grouped["ci_high"]).all()
    assert (grouped["delta_ci_low"] <= grouped["delta_ci_high"]).all()
    assert frame.loc[frame["metric"] == "auc", ["ci_low", "ci_high"]].isna().all().all()
    assert first.ci == 0.9 and first.n_boot == 100 and first.seed == 3


def test_small_bootstrap_blocks_run_single_threaded_and_restore_threads(
    logs: fusion.LogSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = numba.get_num_threads()
    seen = []
    real = evaluate_module.combined_metric_sums

    def spy(*args, **kwargs):
        seen.append(numba.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "combined_metric_sums", spy)
    evaluate(logs, FORMULAS["sum"], metrics=["gauc"], ci=0.9, n_boot=10)
    assert seen[0] == threads and set(seen[1:]) == {1}  # main pass, then the blocks
    assert numba.get_num_threads() == threads


def test_bootstrap_width_matches_the_standard_error_of_a_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # top@K is a plain mean over requests, so a request bootstrap must give about
    # mean +- 1.645 * sd / sqrt(G); with more requests than blocks, this checks that
    # resampling random blocks of requests keeps that width.
    monkeypatch.setattr(evaluate_module, "BOOTSTRAP_BLOCKS", 64)
    logs = _load(make_log_frame(600, seed=7, objectives=("click",)), tmp_path / "big.parquet")
    assert logs.n_requests > 64
    formula = Formula.sum({"click": 1.0})
    result = evaluate(logs, formula, metrics=["top@3"], ci=0.9, n_boot=400, seed=0)
    per_request = np.array([value for value, _ in _group_values(
        logs, formula.fuse(logs), logs.group_offsets, np.arange(logs.n_rows), "click", "top@3")])
    standard_error = per_request.std(ddof=1) / np.sqrt(per_request.size)
    assert result["click", "top@3"] == pytest.approx(per_request.mean(), rel=1e-12)
    width = result.ci_high[0, 0] - result.ci_low[0, 0]
    assert width / (2 * 1.645 * standard_error) == pytest.approx(1.0, abs=0.25)


def test_bootstrap_by_user_resamples_each_user(logs: fusion.LogSet) -> None:
    assert logs.n_users < evaluate_module.BOOTSTRAP_BLOCKS  # one block per user: exact
    result = evaluate(logs, FORMULAS["sum"], metrics=["gauc"], group_by="user", ci=0.8,
                      n_boot=50)
    assert (result.ci_low <= result.values).all() and (result.values <= result.ci_high).all()


# --- input checks, all before any work ----------------------------------------------------
@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("work started before the inputs were checked")

    monkeypatch.setattr(evaluate_module, "_sweep", fail)
    monkeypatch.setattr(evaluate_module, "_user_layout", fail)


@pytest.mark.usefixtures("no_work")
@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda logs: evaluate(logs, Formula.sum({"share": 1.0})), FormulaError,
         r"1 objective\(s\) not in the logs, e.g. 'share'"),
        (lambda logs: evaluate(logs, Formula.product({"click": 1.0, "dwell": 1.0}),
                               group_by="user"),
         FormulaError, r"objective 'click': \d+ row\(s\) have score \+ alpha <= 0"),
        (lambda logs: evaluate(logs, FORMULAS["sum"], baseline=Formula.product({"like": 1.0})),
         FormulaError, r"objective 'like'"),
        (lambda logs: evaluate(logs, FORMULAS["sum"], metrics=["gauc", "mrr"]), MetricError, "mrr"),
        (lambda logs: evaluate(logs, FORMULAS["sum"], metrics=["ndcg@0"]), MetricError, "K"),
        (lambda logs: evaluate(logs, FORMULAS["sum"], metrics=[]), MetricError, "no metric"),
        (lambda logs: evaluate(logs, {"click": 1.0}), FormulaError, "must be a Formula"),
        (lambda logs: evaluate(logs, FORMULAS["sum"], group_by="session"), FusionError, "group_by"),
        (lambda logs: evaluate(logs, FORMULAS["sum"], ci=95), FusionError, "ci must be"),
        (lambda logs: evaluate(logs, FORMULAS["sum"], ci=0.9, n_boot=1), FusionError, "n_boot"),
        (lambda logs: evaluate(logs, FORMULAS["sum"], chunk_rows=0), FusionError, "chunk_rows"),
        (lambda logs: evaluate("logs.parquet", FORMULAS["sum"]), FusionError, "LogSet"),
        (lambda logs: evaluate_many(logs, "sum", [[0.5, -0.1, 0.2], [1, 1, -2]]), FormulaError,
         r"weights: 2 value\(s\) are negative, e.g. candidate 0, objective 'dwell': -0.1"),
        (lambda logs: evaluate_many(logs, "sum", [[0.5, np.nan, 0.2]]), FormulaError,
         r"weights: 1 value\(s\) are NaN or infinite, e.g. candidate 0, objective 'dwell'"),
        (lambda logs: evaluate_many(logs, "sum", [[1, 1, 1], [0, 0, 0]]), FormulaError,
         r"weights: 1 candidate\(s\) have every weight 0, e.g. candidate 1"),
        (lambda logs: evaluate_many(logs, "sum", [[1, 1]]), FormulaError,
         r"expected shape \(candidates, 3\).*got shape \(1, 2\)"),
        (lambda logs: evaluate_many(logs, "sum", np.zeros((0, 3))), FormulaError, "no candidate"),
        (lambda logs: evaluate_many(logs, "sum", pd.DataFrame({"click": [1.0], "share": [1.0]})),
         FormulaError, r"1 column\(s\) name no objective of the logs, e.g. 'share'"),
        (lambda logs: evaluate_many(logs, "sum", pd.DataFrame({"click": ["a"]})), FormulaError,
         "numbers"),
        (lambda logs: evaluate_many(logs, "mean", [[1, 1, 1]]), FormulaError, "kind: 'mean'"),
        (lambda logs: evaluate_many(logs, "product", [[1, 1, 1]]), FormulaError,
         r"objective 'click'.*alphas=\{'click'"),
        (lambda logs: evaluate_many(logs, "product", [[1, 1, 1]], alphas={"share": 1.0}),
         FormulaError, r"alphas: 1 objective\(s\) not in the logs"),
        (lambda logs: evaluate_many(logs, "product", [[1, 1, 1]], alphas=np.ones((2, 3))),
         FormulaError, r"alphas: 2 row\(s\) for 1 candidate"),
        (lambda logs: evaluate_many(logs, "sum", [[1, 1, 1]], alphas={"click": 0.1}),
         FormulaError, r"alphas: 1 alpha\(s\) would be ignored"),
        (lambda logs: evaluate_many(logs, "sum", [[1, 1, 1]], transforms={"share": "log"}),
         FormulaError, r"transforms: 1 objective\(s\) not in the logs"),
        (lambda logs: evaluate_many(logs, "sum", [[1, 1, 1]], transforms={"click": "sqrt"}),
         FormulaError, "unknown transform"),
        (lambda logs: evaluate_many(logs, "rank", [[1, 1, 1]], k=-1), FormulaError, "k: must be"),
        (lambda logs: evaluate_many(logs, "sum", [[1, 1, 1]], metrics=["top@-1"]), MetricError,
         "top@-1"),
    ],
)
def test_bad_input_is_rejected_before_any_work(logs: fusion.LogSet, call, error, message) -> None:
    with pytest.raises(error, match=message):
        call(logs)

"""Fusion formulas: features against hand-worked values, SQL (run in DuckDB) and Python
renderings against the library, validation, round trips and scale invariance."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import fusion
from fusion.errors import FormulaError
from fusion.formulas import Formula, combine, default_alphas, group_chunks

from .conftest import make_log_frame

# Weights with no small rational relation, so fused ties come only from equal inputs.
W = {"click": 0.6180339887, "dwell": 0.2718281828, "like": 0.1414213562}

FORMULAS = {
    "sum-identity": Formula.sum(W),
    "sum-log": Formula.sum(W, transforms={o: "log" for o in W},
                           alphas={"click": 0.01, "like": 0.5}),
    "sum-minmax": Formula.sum(W, transforms={o: "minmax" for o in W}),
    "sum-zscore": Formula.sum(W, transforms={o: "zscore" for o in W}),
    "sum-percentile": Formula.sum(W, transforms={o: "percentile" for o in W}),
    "sum-mixed": Formula.sum(W, transforms={"click": "minmax", "dwell": "log", "like": "zscore"}),
    "sum-partial": Formula.sum({"click": 0.3090169944, "like": 0.0, "dwell": 0.7071067812},
                               transforms={"dwell": "percentile"}),
    "product": Formula.product(W, alphas={"click": 0.01, "like": 0.01}),
    "product-negative-alpha": Formula.product({"dwell": 1.0, "click": 0.5},
                                              alphas={"dwell": -0.004, "click": 0.2}),
    "rank": Formula.rank(W),
    "rank-small-k": Formula.rank(W, k=0.5),
}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> fusion.LogSet:
    frame = make_log_frame(80, seed=3, objectives=("click", "dwell", "like"))
    # Requests of identical rows and of one row: the degenerate cases of every transform.
    frame.loc[frame["request_id"] == "r0001", ["pred_click", "pred_dwell", "pred_like"]] = 0.25
    path = tmp_path_factory.mktemp("formulas") / "logs.parquet"
    frame.to_parquet(path)
    loaded = fusion.load_logs(path)
    sizes = loaded.request_sizes()
    assert (sizes == 1).any() and (sizes > 20).any()
    assert (loaded.scores[:, loaded.objective_index("click")] == 0).any()
    return loaded


def _within_request_ranks(values: np.ndarray, group_offsets: np.ndarray) -> np.ndarray:
    """1 + number of strictly higher values in the same request (ties share a rank)."""
    groups = np.repeat(np.arange(len(group_offsets) - 1), np.diff(group_offsets))
    frame = pd.DataFrame({"g": groups, "v": values})
    return frame.groupby("g")["v"].rank(method="min", ascending=False).to_numpy()


def _sql_fused(logs: fusion.LogSet, expression: str, columns: dict[str, str] | None = None,
               request_column: str = "request_id") -> np.ndarray:
    columns = columns or {o: f"pred_{o}" for o in logs.objectives}
    # float32 scores widened exactly, so DuckDB sees the same numbers as the library.
    table = pd.DataFrame({columns[o]: logs.scores[:, j].astype(np.float64)
                          for j, o in enumerate(logs.objectives)})
    table[request_column] = np.repeat(logs.request_ids, logs.request_sizes())
    table["row_number"] = np.arange(logs.n_rows)
    con = duckdb.connect()
    try:
        con.register("logs_table", table)
        return con.sql(f"SELECT {expression} AS fused FROM logs_table ORDER BY row_number") \
            .fetchnumpy()["fused"]
    finally:
        con.close()


def _python_fused(logs: fusion.LogSet, expression: str) -> np.ndarray:
    out = np.empty(logs.n_rows)
    code = compile(expression, "<formula>", "eval")
    for g in range(logs.n_requests):
        start, stop = logs.group_offsets[g], logs.group_offsets[g + 1]
        columns = {o: logs.scores[start:stop, j].astype(np.float64)
                   for j, o in enumerate(logs.objectives)}
        out[start:stop] = eval(code, {"np": np}, columns)  # noqa: S307 - our own rendering
    return out


def _assert_same_ranking(actual: np.ndarray, expected: np.ndarray, logs: fusion.LogSet) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(_within_request_ranks(actual, logs.group_offsets),
                                  _within_request_ranks(expected, logs.group_offsets))


# --- features against hand-worked values -------------------------------------------------
def test_features_by_hand() -> None:
    # requests: [0.5, 0.5, 0.2] | [0.3] | [0.7, 0.7]
    scores = np.array([[0.5], [0.5], [0.2], [0.3], [0.7], [0.7]], dtype=np.float32)
    offsets = np.array([0, 3, 4, 6])
    p = scores[:, 0].astype(np.float64)

    def feature(formula: Formula) -> np.ndarray:
        return formula.features(scores, offsets, ["x"])[:, 0]

    one = {"x": 1.0}
    np.testing.assert_array_equal(feature(Formula.sum(one)), p)
    np.testing.assert_array_equal(feature(Formula.sum(one, {"x": "minmax"})), [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(feature(Formula.sum(one, {"x": "percentile"})),
                                  [0.5, 0.5, 0, 0, 0, 0])
    first = p[:3]
    expected_z = (first - first.mean()) / first.std()
    np.testing.assert_allclose(feature(Formula.sum(one, {"x": "zscore"})),
                               [*expected_z, 0, 0, 0], rtol=1e-12)
    np.testing.assert_array_equal(feature(Formula.sum(one, {"x": "log"}, {"x": 0.1})),
                                  np.log(p + 0.1))
    np.testing.assert_array_equal(feature(Formula.product(one)), np.log(p))
    # ranks 1, 1, 3 | 1 | 1, 1
    np.testing.assert_array_equal(feature(Formula.rank(one, k=2.0)),
                                  1 / (np.array([1, 1, 3, 1, 1, 1]) + 2.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ranks_and_percentiles_match_pandas_with_ties_and_signed_zeros(dtype) -> None:
    # float32 scores take the one-sort path, other float64 scores the lexsort path.
    rng = np.random.default_rng(4)
    sizes = rng.integers(1, 12, size=300)
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    values = rng.normal(size=offsets[-1]).round(1)
    values[:3] = [0.0, -0.0, 0.0]
    if dtype is np.float64:
        values = values + 1e-9
        assert not np.array_equal(values.astype(np.float32), values)
    scores = values.astype(dtype)[:, None]
    frame = pd.DataFrame({"g": np.repeat(np.arange(sizes.size), sizes), "v": scores[:, 0]})
    rank = frame.groupby("g")["v"].rank(method="min", ascending=False).to_numpy()
    below = frame.groupby("g")["v"].rank(method="min").to_numpy() - 1
    size = np.repeat(sizes, sizes).astype(np.float64)
    percentile = np.where(size > 1, below / np.maximum(size - 1, 1), 0.0)
    one = {"x": 1.0}
    np.testing.assert_array_equal(Formula.rank(one, k=2.0).features(scores, offsets, ["x"])[:, 0],
                                  1 / (rank + 2.0))
    np.testing.assert_array_equal(
        Formula.sum(one, {"x": "percentile"}).features(scores, offsets, ["x"])[:, 0], percentile)


def test_zscore_of_equal_scores_is_exactly_zero() -> None:
    # 0.1 * 3 / 3 != 0.1 in floating point: the transform must not divide that residue.
    scores = np.full((3, 1), 0.1, dtype=np.float32)
    features = Formula.sum({"x": 1.0}, {"x": "zscore"}).features(scores, np.array([0, 3]), ["x"])
    np.testing.assert_array_equal(features, 0.0)


def test_features_of_zero_weight_objectives_are_zero(logs: fusion.LogSet) -> None:
    # log(0) of the unweighted click scores must not leak in as -inf or NaN.
    formula = Formula.product({"click": 0.0, "dwell": 1.0})
    features = formula.features(logs.scores, logs.group_offsets, logs.objectives)
    assert np.isfinite(features).all()
    np.testing.assert_array_equal(features[:, logs.objective_index("click")], 0.0)
    np.testing.assert_array_equal(features[:, logs.objective_index("like")], 0.0)


@pytest.mark.parametrize("name", FORMULAS)
def test_features_of_a_chunk_equal_those_of_the_whole(logs: fusion.LogSet, name: str) -> None:
    formula = FORMULAS[name]
    whole = formula.features(logs.scores, logs.group_offsets, logs.objectives)
    for start, stop, offsets in group_chunks(logs.group_offsets, 50):
        chunk = formula.features(logs.scores[start:stop], offsets, logs.objectives)
        np.testing.assert_array_equal(chunk, whole[start:stop])
    np.testing.assert_array_equal(formula.fuse(logs, chunk_rows=7), formula.fuse(logs))


# --- renderings ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", FORMULAS)
def test_sql_in_duckdb_ranks_every_request_like_fuse(logs: fusion.LogSet, name: str) -> None:
    formula = FORMULAS[name]
    _assert_same_ranking(_sql_fused(logs, formula.to_sql()), formula.fuse(logs), logs)


@pytest.mark.parametrize("name", FORMULAS)
def test_python_expression_ranks_every_request_like_fuse(logs: fusion.LogSet, name: str) -> None:
    formula = FORMULAS[name]
    _assert_same_ranking(_python_fused(logs, formula.to_python()), formula.fuse(logs), logs)


def test_sql_quotes_column_names_that_need_it(logs: fusion.LogSet) -> None:
    formula = FORMULAS["sum-mixed"]
    columns = {"click": "Click Score", "dwell": "select", "like": 'like "p"'}
    sql = formula.to_sql(columns, request_column="Request Id")
    assert '"Click Score"' in sql and '"select"' in sql and '"like ""p"""' in sql
    assert 'PARTITION BY "Request Id"' in sql
    got = _sql_fused(logs, sql, columns, request_column="Request Id")
    _assert_same_ranking(got, formula.fuse(logs), logs)


def test_renderings_leave_out_zero_weights_and_zero_alphas() -> None:
    formula = Formula.product({"click": 0.5, "like": 0.0, "dwell": 0.25}, alphas={"dwell": 1.5})
    assert formula.to_sql() == "0.5 * ln(pred_click) + 0.25 * ln(pred_dwell + 1.5)"
    assert formula.to_python() == "0.5 * np.log(click) + 0.25 * np.log(dwell + 1.5)"
    assert Formula.sum({"a": 1.0}, {"a": "log"}, {"a": -0.25}).to_sql() == "1.0 * ln(pred_a - 0.25)"


def test_sum_docstring_example_is_the_real_output() -> None:
    formula = Formula.sum({"click": 0.7, "dwell": 0.3}, transforms={"dwell": "percentile"})
    assert formula.to_python() in Formula.sum.__doc__


def test_to_python_refuses_an_objective_named_np() -> None:
    with pytest.raises(FormulaError, match="'np'"):
        Formula.sum({"np": 1.0}).to_python()


# --- order invariance ---------------------------------------------------------------------
@pytest.mark.parametrize("name", FORMULAS)
@pytest.mark.parametrize("scale", [1e-3, 3.7, 1e4])
def test_scaling_weights_keeps_every_request_order(logs: fusion.LogSet, name: str,
                                                   scale: float) -> None:
    formula = FORMULAS[name]
    scaled = Formula.of(formula.kind, {o: w * scale for o, w in formula.weights.items()},
                        alphas=formula.alphas or None, transforms=formula.transforms or None,
                        k=formula.k)
    for other in (scaled, formula.normalized()):
        np.testing.assert_array_equal(
            _within_request_ranks(other.fuse(logs), logs.group_offsets),
            _within_request_ranks(formula.fuse(logs), logs.group_offsets),
        )


def test_normalized_weights_sum_to_one_and_keep_the_rest() -> None:
    formula = Formula.product({"click": 2.0, "dwell": 6.0}, alphas={"click": 0.1})
    normalized = formula.normalized()
    assert normalized.weights == {"click": 0.25, "dwell": 0.75}
    assert normalized.alphas == formula.alphas and normalized.kind == "product"


def test_combine_gives_identical_rows_identical_bits_alone_or_among_candidates() -> None:
    rng = np.random.default_rng(0)
    features = np.repeat(rng.random((1, 3)), 37, axis=0)
    features = np.vstack([features, rng.random((20, 3))])
    weights = rng.random((5, 3))
    weights[2, 1] = 0.0
    many = combine(features, weights)
    assert many.shape == (5, 57)
    assert (many[:, :37] == many[:, :1]).all()
    for c in range(5):
        np.testing.assert_array_equal(combine(features, weights[c]), many[c])


def test_combine_adds_weighted_features_left_to_right_and_skips_zero_weights() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(40, 3)) * 10.0 ** rng.integers(-8, 8, size=(40, 3))
    features[3, 1] = np.inf  # unweighted below: must not turn into NaN
    weights = np.array([[0.3, 0.0, 0.7], [0.1, 0.2, 0.7]])
    # Products rounded, then summed in objective order (what numpy's loop gives).
    expected = features[:, 0] * 0.3 + features[:, 2] * 0.7
    np.testing.assert_array_equal(combine(features, weights[0]), expected)
    # Written into a strided view of a larger matrix, e.g. one chunk of all rows.
    target = np.full((2, 100), -1.0)
    combine(features, weights, out=target[:, 10:50])
    np.testing.assert_array_equal(target[0, 10:50], expected)
    assert np.isposinf(target[1, 13]) and (target[:, :10] == -1).all()


def test_group_chunks_cover_whole_groups() -> None:
    offsets = np.array([0, 2, 3, 10, 11, 12, 20])
    chunks = list(group_chunks(offsets, 3))
    assert [(start, stop) for start, stop, _ in chunks] == [(0, 3), (3, 10), (10, 12), (12, 20)]
    for start, stop, local in chunks:
        assert local[0] == 0 and local[-1] == stop - start
        assert set(local + start) <= set(offsets)
    assert list(group_chunks(np.array([0]), 3)) == []


# --- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", FORMULAS)
def test_dict_round_trip_is_exact(name: str) -> None:
    formula = FORMULAS[name]
    data = formula.to_dict()
    rebuilt = Formula.from_dict(json.loads(json.dumps(data)))
    assert rebuilt == formula and hash(rebuilt) == hash(formula)
    assert rebuilt.to_dict() == data
    assert rebuilt.to_sql() == formula.to_sql()


def test_equal_formulas_hash_equal_whatever_the_dict_order() -> None:
    a = Formula.sum({"click": 0.5, "dwell": 0.5}, transforms={"dwell": "zscore"})
    b = Formula.sum({"dwell": 0.5, "click": 0.5},
                    transforms={"click": "identity", "dwell": "zscore"})
    assert a == b and hash(a) == hash(b)
    assert len({a, b, Formula.rank({"click": 1.0})}) == 2


def test_defaults_are_filled_in() -> None:
    assert Formula.product({"a": 1.0, "b": 0.0}).alphas == {"a": 0.0, "b": 0.0}
    assert Formula.sum({"a": 1.0}).transforms == {"a": "identity"}
    assert Formula.sum({"a": 1.0, "b": 1.0}, {"b": "log"}).alphas == {"b": 0.0}
    assert Formula.rank({"a": 1.0}).k == 60.0
    assert Formula.of("rank", {"a": 1}).weights == {"a": 1.0}


# --- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Formula.sum({"click": -0.5, "dwell": 1.0, "like": -1}),
         r"weights: 2 value\(s\) are negative, e.g. 'click': -0.5"),
        (lambda: Formula.sum({"click": float("nan"), "dwell": 1.0}),
         r"weights: 1 value\(s\) are NaN or infinite, e.g. 'click': nan"),
        (lambda: Formula.product({"click": float("inf")}), r"weights: 1 value\(s\) are NaN or inf"),
        (lambda: Formula.rank({"click": 0.0, "dwell": 0}), r"weights: all 2 weight\(s\) are 0"),
        (lambda: Formula.sum({}), r"weights: no objective"),
        (lambda: Formula.sum([("click", 1.0)]), r"weights must map objective names"),
        (lambda: Formula.sum({"click": "0.5"}), r"weights: the value of 'click' must be a number"),
        (lambda: Formula.sum({"click": True}), r"must be a number"),
        (lambda: Formula.sum({"my click": 1.0, "2x": 1.0}),
         r"weights: 2 objective name\(s\) are not valid.*'my click'"),
        (lambda: Formula.sum({"click": 1.0}, transforms={"click": "sqrt"}),
         r"transforms: 1 unknown transform\(s\), e.g. 'click': 'sqrt'"),
        (lambda: Formula.sum({"click": 1.0}, transforms={"dwell": "log"}),
         r"transforms: 1 objective\(s\) have no weight, e.g. 'dwell'"),
        (lambda: Formula.of("product", {"click": 1.0}, transforms={"click": "log"}),
         r"transforms: only 'sum'"),
        (lambda: Formula.product({"click": 1.0}, alphas={"click": float("nan")}),
         r"alphas: 1 value\(s\) are NaN or infinite, e.g. 'click': nan"),
        (lambda: Formula.product({"click": 1.0}, alphas={"dwell": 0.1}),
         r"alphas: 1 objective\(s\) have no weight, e.g. 'dwell'"),
        (lambda: Formula.sum({"click": 1.0}, alphas={"click": 0.1}),
         r"alphas: 1 alpha\(s\) would be ignored, e.g. 'click': alphas apply only .* 'log'"),
        (lambda: Formula.of("rank", {"click": 1.0}, alphas={"click": 0.1}),
         r"'rank' formulas take no alphas"),
        (lambda: Formula.rank({"click": 1.0}, k=0), r"k: must be finite and > 0, got 0.0"),
        (lambda: Formula.rank({"click": 1.0}, k=float("inf")), r"k: must be finite and > 0"),
        (lambda: Formula.of("sum", {"click": 1.0}, k=5), r"k: only 'rank' formulas take k"),
        (lambda: Formula.of("max", {"click": 1.0}), r"kind: 'max' is not one of"),
        (lambda: Formula.from_dict({"kind": "sum", "weights": {"a": 1}, "beta": 1}),
         r"formula: 1 unknown field\(s\), e.g. 'beta'"),
        (lambda: Formula.from_dict({"weights": {"a": 1}}), r"field 'kind' is missing"),
        (lambda: Formula.from_dict(["sum"]), r"a formula must be a mapping"),
        (lambda: Formula.sum({"a": 1.0}).to_sql({"a": ""}), r"score_columns: 1 column name"),
    ],
)
def test_bad_formulas_raise_naming_field_count_and_example(build, message: str) -> None:
    with pytest.raises(FormulaError, match=message):
        build()


def test_validate_for_names_unknown_objectives(logs: fusion.LogSet) -> None:
    formula = Formula.sum({"click": 1.0, "share": 0.5, "save": 0.0})
    with pytest.raises(FormulaError, match=r"2 objective\(s\) not in the logs, e.g. 'share'"):
        formula.validate_for(logs)
    with pytest.raises(FormulaError, match="not in the logs"):
        formula.fuse(logs)
    with pytest.raises(FormulaError, match="not in the logs"):
        formula.weight_vector(logs.objectives)


def test_default_alphas_make_every_log_feature_defined(tmp_path: Path) -> None:
    frame = make_log_frame(60, seed=3, objectives=("click", "dwell", "like"))
    frame.loc[0, "pred_click"] = 0.0                    # binary, reaches 0
    frame.loc[1, "pred_dwell"] = 0.0                    # graded (seconds), reaches 0
    frame["pred_like"] = frame["pred_like"] * 0.5 + 0.25  # every score > 0
    frame.to_parquet(tmp_path / "logs.parquet")
    logs = fusion.load_logs(tmp_path / "logs.parquet")
    lowest = {o: float(logs.scores[:, logs.objective_index(o)].min()) for o in logs.objectives}
    assert lowest["click"] == lowest["dwell"] == 0 and lowest["like"] > 0
    alphas = default_alphas(logs)
    assert alphas == {"click": 1e-6, "dwell": 1.0, "like": 0.0}
    formula = Formula.product({o: 1.0 for o in logs.objectives}, alphas=alphas)
    formula.validate_for(logs)
    assert np.isfinite(formula.fuse(logs)).all()
    assert default_alphas(logs, "sum", {"dwell": "log", "click": "zscore"}) == {
        "dwell": alphas["dwell"]}
    assert default_alphas(logs, "sum") == default_alphas(logs, "rank") == {}


@pytest.mark.parametrize("formula", [Formula.product({"click": 0.5, "dwell": 0.5}),
                                     Formula.sum({"click": 1.0}, {"click": "log"})])
def test_validate_for_reports_undefined_logs_and_suggests_an_alpha(
    logs: fusion.LogSet, formula: Formula
) -> None:
    zeros = int((logs.scores[:, logs.objective_index("click")] == 0).sum())
    with pytest.raises(FormulaError) as caught:
        formula.validate_for(logs)
    message = str(caught.value)
    assert f"objective 'click': {zeros} row(s) have score + alpha <= 0" in message
    assert "has score 0.0" in message and "alphas={'click': 1e-06}" in message
    with pytest.raises(FormulaError, match=r"objective 'click'"):
        formula.features(logs.scores, logs.group_offsets, logs.objectives)
    fixed = Formula.of(formula.kind, formula.weights, alphas={"click": 1e-6},
                       transforms=formula.transforms or None)
    fixed.validate_for(logs)
    assert np.isfinite(fixed.fuse(logs)).all()


def test_validate_for_ignores_the_log_of_unweighted_objectives(logs: fusion.LogSet) -> None:
    Formula.product({"click": 0.0, "dwell": 1.0}).validate_for(logs)


def test_features_rejects_mismatched_shapes() -> None:
    formula = Formula.sum({"a": 1.0})
    with pytest.raises(FormulaError, match="scores must be"):
        formula.features(np.zeros((3, 2)), np.array([0, 3]), ["a"])
    with pytest.raises(FormulaError, match="group_offsets must run from 0 to 3"):
        formula.features(np.zeros((3, 1)), np.array([0, 2]), ["a"])


def test_sql_is_valid_for_a_written_and_reloaded_log(tmp_path: Path) -> None:
    # End to end through a file, as serving would see it: SQL over the Parquet columns.
    frame = make_log_frame(10, seed=5, objectives=("click", "dwell"))
    frame["item_id"] = np.arange(len(frame))  # unique, so both sides share one row order
    path = tmp_path / "logs.parquet"
    frame.to_parquet(path)
    logs = fusion.load_logs(path)
    formula = Formula.rank({"click": 0.4, "dwell": 0.6}, k=10)
    con = duckdb.connect()
    try:
        got = con.execute(
            f"SELECT {formula.to_sql()} AS fused FROM read_parquet(?) "
            "ORDER BY request_id, item_id", [str(path)]
        ).fetchnumpy()["fused"]
    finally:
        con.close()
    _assert_same_ranking(got, formula.fuse(logs), logs)

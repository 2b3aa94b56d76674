"""The dashboard's chart builders and display tables, without a browser."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from app import charts


@pytest.fixture
def candidates() -> pd.DataFrame:
    """Candidates as a SearchResult holds them: 2 on the front, 1 dominated, 1 infeasible."""
    return pd.DataFrame({
        "candidate_id": [0, 1, 2, 3],
        "w:click": [0.7, 0.2, 0.5, 0.1],
        "w:dwell": [0.3, 0.8, 0.5, 0.9],
        "click:gauc": [0.71, 0.65, 0.66, 0.60],
        "dwell:ndcg@10": [0.40, 0.52, 0.45, 0.55],
        "conversion:gauc": [0.80, 0.79, 0.78, 0.70],
        "feasible": [True, True, True, False],
        "pareto_rank": [0, 0, 1, -1],
        "elapsed_s": [0.1, 0.1, 0.2, 0.2],
    })


METRIC_COLUMNS = ["click:gauc", "dwell:ndcg@10", "conversion:gauc"]
WEIGHT_COLUMNS = ["w:click", "w:dwell"]


@pytest.fixture
def metrics_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "objective": ["click", "click", "conversion", "conversion"],
        "metric": ["gauc", "ndcg@10", "gauc", "ndcg@10"],
        "value": [0.70, 0.30, 0.81, 0.10],
        "baseline": [0.7021, 0.30, 0.8003, 0.12],
        "delta": [-0.003, 0.0, 0.012, float("nan")],
    })


# --- distributions -----------------------------------------------------------------------
def test_histogram_data_shares_edges_and_counts_every_finite_value():
    rng = np.random.default_rng(0)
    a, b = rng.random(1000), rng.random(500) * 2
    b[:5] = np.nan
    data = charts.histogram_data({"a": a, "b": b}, bins=20)
    assert list(data.columns) == ["series", "left", "right", "count", "share"]
    per_series = {name: group for name, group in data.groupby("series")}
    np.testing.assert_array_equal(per_series["a"]["left"], per_series["b"]["left"])
    assert per_series["a"]["count"].sum() == 1000
    assert per_series["b"]["count"].sum() == 495
    assert per_series["b"]["share"].sum() == pytest.approx(1.0)
    assert data["left"].min() == pytest.approx(min(a.min(), np.nanmin(b)))
    assert data["right"].max() == pytest.approx(max(a.max(), np.nanmax(b)))


def test_histogram_data_on_log_scale_leaves_out_values_that_are_not_positive():
    data = charts.histogram_data({"s": np.array([0.0, -1.0, 0.01, 0.1, 1.0, 10.0])},
                                 bins=4, log_x=True)
    assert data["count"].sum() == 4
    assert data["share"].sum() == pytest.approx(4 / 6)
    np.testing.assert_allclose(data["left"], np.geomspace(0.01, 10.0, 5)[:-1])


def test_histogram_data_of_constant_and_empty_series():
    constant = charts.histogram_data({"c": np.full(7, 3.0)})
    assert len(constant) == 1 and constant["count"].iloc[0] == 7
    assert constant["left"].iloc[0] < 3.0 < constant["right"].iloc[0]
    assert charts.histogram_data({"e": np.array([np.nan])}).empty


def test_histogram_figure_draws_one_step_curve_per_series():
    data = charts.histogram_data({"feed": np.arange(10.0), "search": np.arange(5.0)}, bins=5)
    figure = charts.histogram_figure(data, x_title="score", log_x=True)
    assert [t.name for t in figure.data] == ["feed", "search"]
    assert all(t.line.shape == "hv" and len(t.x) == 6 for t in figure.data)
    assert figure.data[0].y[-1] == figure.data[0].y[-2]  # the last step is drawn to the edge
    assert figure.layout.xaxis.type == "log"
    assert figure.layout.showlegend is True


def test_ecdf_data_runs_from_minimum_to_maximum():
    values = np.array([3.0, 1.0, 2.0, np.nan, 4.0])
    data = charts.ecdf_data({"x": values}, points=5)
    np.testing.assert_allclose(data["value"], [1.0, 1.75, 2.5, 3.25, 4.0])
    np.testing.assert_allclose(data["fraction"], [0, 0.25, 0.5, 0.75, 1.0])
    assert charts.ecdf_data({"x": np.array([np.inf])}).empty


def test_ecdf_figure_has_a_line_per_series():
    data = charts.ecdf_data({"a": np.arange(5.0), "b": np.arange(3.0)}, points=11)
    figure = charts.ecdf_figure(data, x_title="score")
    assert [t.name for t in figure.data] == ["a", "b"]
    assert len(figure.data[0].x) == 11
    assert figure.layout.xaxis.type is None


def test_reliability_figure_draws_the_curve_against_the_diagonal():
    curve = pd.DataFrame({"mean_score": [0.05, 0.2, 0.6], "positive_rate": [0.04, 0.25, 0.5],
                          "mean_label": [0.04, 0.25, 0.5], "count": [100, 50, 10]})
    figure = charts.reliability_figure(curve, ece=0.0123, objective="click")
    diagonal, line = figure.data
    assert list(diagonal.x) == [0, 0.6] and list(diagonal.y) == [0, 0.6]
    assert list(line.y) == [0.04, 0.25, 0.5] and list(line.customdata) == [100, 50, 10]
    assert "0.0123" in figure.layout.title.text
    assert figure.layout.yaxis.title.text == "observed positive rate"


def test_reliability_figure_of_a_graded_objective_compares_with_the_mean_label():
    curve = pd.DataFrame({"mean_score": [2.0, 30.0], "positive_rate": [0.1, 0.9],
                          "mean_label": [3.0, 25.0], "count": [10, 10]})
    figure = charts.reliability_figure(curve, ece=3.0, objective="dwell", graded=True)
    diagonal, line = figure.data
    assert list(line.y) == [3.0, 25.0]
    assert list(diagonal.x) == [0, 30.0]
    assert figure.layout.yaxis.title.text == "mean label"


def test_correlation_figure_shows_the_matrix_on_a_fixed_scale():
    matrix = pd.DataFrame([[1.0, -0.2], [-0.2, 1.0]], index=["a", "b"], columns=["a", "b"])
    heatmap = charts.correlation_figure(matrix).data[0]
    np.testing.assert_array_equal(heatmap.z, matrix.to_numpy())
    assert (heatmap.zmin, heatmap.zmax) == (-1, 1)
    assert list(heatmap.text[0]) == ["1.00", "-0.20"]


# --- metric tables and text --------------------------------------------------------------
def test_metric_table_puts_each_metric_next_to_its_change(metrics_frame):
    table = charts.metric_table(metrics_frame)
    assert list(table.index) == ["click", "conversion"]
    assert list(table.columns) == ["gauc", "gauc Δ", "ndcg@10", "ndcg@10 Δ"]
    assert table.loc["conversion", "gauc"] == 0.81
    assert table.loc["click", "gauc Δ"] == -0.003
    assert math.isnan(table.loc["conversion", "ndcg@10 Δ"])


def test_format_metric_table_colours_gains_green_and_losses_red(metrics_frame):
    shown = charts.format_metric_table(charts.metric_table(metrics_frame))
    assert shown.loc["click", "gauc"] == "0.7000"
    assert shown.loc["click", "gauc Δ"] == ":red[-0.3%]"
    assert shown.loc["conversion", "gauc Δ"] == ":green[+1.2%]"
    assert shown.loc["click", "ndcg@10 Δ"] == "+0.0%"
    assert shown.loc["conversion", "ndcg@10 Δ"] == "–"


@pytest.mark.parametrize("value, text", [
    (-0.003, "-0.3%"), (0.012, "+1.2%"), (0.0, "+0.0%"), (0.0004, "+0.04%"),
    (float("nan"), "–"), (None, "–"),
])
def test_format_relative(value, text):
    assert charts.format_relative(value) == text


def test_delta_markdown_by_sign():
    assert charts.delta_markdown(0.01) == ":green[+1.0%]"
    assert charts.delta_markdown(-0.01) == ":red[-1.0%]"
    assert charts.delta_markdown(float("nan")) == "–"


def test_describe_changes_in_plain_language(metrics_frame):
    assert charts.describe_changes(metrics_frame, metrics=["gauc"]) == (
        "click gauc -0.3%, conversion gauc +1.2%")
    # NaN deltas are left out; unchanged metrics say so.
    assert charts.describe_changes(metrics_frame) == (
        "click gauc -0.3%, click ndcg@10 +0.0%, conversion gauc +1.2%")
    assert charts.describe_changes(metrics_frame.assign(delta=float("nan"))) == ""


def test_format_weights():
    assert charts.format_weights({"click": 0.5, "like": 0.25}) == "click 0.500 · like 0.250"


def test_top_items_orders_by_fused_score_and_keeps_labels_aligned():
    labels = pd.DataFrame({"click": [0, 1, 0, 1], "dwell": [0.0, 12.5, 0.0, 3.0]})
    table = charts.top_items(np.array([10, 11, 12, 13]), labels, np.array([0.1, 0.9, 0.5, 0.5]),
                             k=3)
    assert list(table.index) == [1, 2, 3]
    assert list(table["item"]) == [11, 12, 13]  # the tie keeps the log's order
    assert list(table["dwell"]) == [12.5, 0.0, 3.0]


# --- search results ----------------------------------------------------------------------
def test_candidate_status(candidates):
    assert list(charts.candidate_status(candidates)) == ["front", "front", "dominated",
                                                          "infeasible"]


def test_metric_columns_skip_weights_alphas_and_bookkeeping(candidates):
    with_alpha = candidates.assign(**{"alpha:click": 0.1})
    assert charts.metric_columns(with_alpha) == METRIC_COLUMNS


def test_pareto_scatter_highlights_front_greys_infeasible_and_marks_baseline(candidates):
    figure = charts.pareto_scatter(candidates, "click:gauc", "dwell:ndcg@10",
                                   weight_columns=WEIGHT_COLUMNS, metric_columns=METRIC_COLUMNS,
                                   baseline={"click:gauc": 0.68, "dwell:ndcg@10": 0.44},
                                   selected_id=1)
    by_name = {t.name: t for t in figure.data}
    assert list(by_name) == ["infeasible", "dominated", "front", "baseline", "selected"]
    assert [row[0] for row in by_name["front"].customdata] == [0, 1]
    assert list(by_name["front"].x) == [0.71, 0.65]
    assert by_name["infeasible"].marker.color == charts.INFEASIBLE_COLOR
    assert by_name["front"].marker.color == charts.FRONT_COLOR
    assert (by_name["baseline"].x[0], by_name["baseline"].y[0]) == (0.68, 0.44)
    assert list(by_name["selected"].x) == [0.65]
    hover = by_name["infeasible"].text[0]
    assert "candidate 3" in hover and "click 0.100" in hover and "dwell 0.900" in hover
    assert all(f"{c} " in hover for c in METRIC_COLUMNS)


def test_pareto_scatter_without_baseline_or_selection(candidates):
    figure = charts.pareto_scatter(candidates, "click:gauc", "conversion:gauc",
                                   weight_columns=WEIGHT_COLUMNS, metric_columns=METRIC_COLUMNS,
                                   baseline={"dwell:ndcg@10": 0.4})
    assert [t.name for t in figure.data] == list(charts.STATUSES)


def test_scatter_matrix_has_every_metric_as_a_dimension(candidates):
    figure = charts.scatter_matrix(candidates, METRIC_COLUMNS)
    assert [t.name for t in figure.data] == list(charts.STATUSES)
    assert [d.label for d in figure.data[2].dimensions] == METRIC_COLUMNS
    assert list(figure.data[2].dimensions[0].values) == [0.71, 0.65]


def test_parallel_coordinates_go_from_weights_to_metrics(candidates):
    parcoords = charts.parallel_coordinates(candidates, WEIGHT_COLUMNS, METRIC_COLUMNS).data[0]
    assert [d.label for d in parcoords.dimensions] == WEIGHT_COLUMNS + METRIC_COLUMNS
    assert list(parcoords.line.color) == [2, 2, 1, 0]  # front, front, dominated, infeasible


def test_hypervolume_figure_plots_the_history():
    history = pd.DataFrame({"elapsed_s": [0.1, 0.3], "evaluations": [64, 128],
                            "hypervolume": [0.01, 0.015]})
    line = charts.hypervolume_figure(history).data[0]
    assert list(line.x) == [64, 128] and list(line.y) == [0.01, 0.015]


# --- data summary tables -----------------------------------------------------------------
def test_format_date_range():
    assert charts.format_date_range(pd.Timestamp("2026-03-02 10:00"),
                                    pd.Timestamp("2026-03-08 23:59")) == "2026-03-02 – 2026-03-08"
    assert charts.format_date_range(None, None) == "–"


def test_objective_table_lists_every_objective_with_its_figures():
    from fusion import Objective, Schema

    schema = Schema((Objective("click", "p_ctr", "is_click"),
                     Objective("dwell", "pred_dwell", "label_dwell", kind="graded")))
    summary = {"base_rate": {"click": 0.1, "dwell": 0.3},
               "label_mean": {"click": 0.1, "dwell": 7.5}}
    table = charts.objective_table(schema, summary, {"click": 0.62})
    assert list(table.index) == ["click", "dwell"]
    assert table.loc["click", "score column"] == "p_ctr"
    assert table.loc["dwell", "kind"] == "graded"
    assert table.loc["dwell", "label mean"] == 7.5
    assert table.loc["click", "single-score GAUC"] == 0.62
    assert math.isnan(table.loc["dwell", "single-score GAUC"])


def test_slice_table_counts_values():
    slices = {"surface": pd.Categorical(["feed", "search", "feed"]),
              "category": pd.Categorical(list("abcdefg"))}
    table = charts.slice_table(slices)
    assert table.loc["surface", "values"] == 2
    assert table.loc["surface", "examples"] == "feed, search"
    assert table.loc["category", "examples"] == "a, b, c, d, e, …"


def test_reevaluation_table_puts_stored_values_next_to_new_ones(metrics_frame):
    now = metrics_frame.assign(value=metrics_frame["value"] + 0.01)
    stored = metrics_frame[metrics_frame["metric"] == "gauc"]
    table = charts.reevaluation_table(stored, now)
    assert table.loc[("click", "gauc"), "exported"] == 0.70
    assert table.loc[("click", "gauc"), "now"] == pytest.approx(0.71)
    assert math.isnan(table.loc[("click", "ndcg@10"), "exported"])
    empty = charts.reevaluation_table(stored.iloc[:0], now)
    assert empty["exported"].isna().all()

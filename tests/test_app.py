"""The dashboard driven headless with Streamlit's AppTest, page by page, by widget key."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import fusion
from app import charts, state
from fusion import explore

APP = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"
FIRST_RENDER_BUDGET_S = 3.0


def new_app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=120)


def run_ok(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def on_page(at: AppTest, page: str) -> AppTest:
    return run_ok(at.switch_page(f"views/{page}.py"))


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert len(matches) == 1, [b.label for b in at.button]
    return matches[0]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def tuned_table(at: AppTest) -> pd.DataFrame:
    """The metrics table of the Tune or Export page (the first table on it), as shown."""
    return at.table[0].value


def as_shown(result: fusion.EvaluationResult) -> pd.DataFrame:
    """What the metrics table shows for ``result`` (the display formatting is tested apart)."""
    return charts.format_metric_table(charts.metric_table(result.to_frame()))


@pytest.fixture(scope="module")
def sample() -> fusion.LogSet:
    return fusion.load_logs(state.SAMPLE_LOGS)


@pytest.fixture
def at(sample) -> AppTest:
    return run_ok(new_app())


# --- first render and the Data page -------------------------------------------------------
def test_first_render_with_the_sample_is_fast(parquet_log, capsys, record_property):
    """A new session's first page with nothing cached: the logs are loaded and summarised.

    What a process does once is done first and not counted: AppTest inspects the whole
    call stack on its first element, and numba compiles the metric kernels on their first
    call (seconds, when its on-disk cache is empty), here on a tiny log.
    """
    AppTest.from_string("import streamlit as st\nst.write('warm-up')").run()
    explore.single_score_gauc(fusion.load_logs(parquet_log))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = new_app()
    started = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - started
    record_property("first_render_s", round(seconds, 3))
    with capsys.disabled():
        print(f"\n[dashboard] first render with the sample logs: {seconds:.2f} s")
    assert not at.exception
    assert seconds <= FIRST_RENDER_BUDGET_S


def test_data_page_summarises_the_sample(at, sample):
    summary = sample.summary()
    assert metric(at, "rows") == f"{sample.n_rows:,}"
    assert metric(at, "requests") == f"{sample.n_requests:,}"
    assert metric(at, "users") == f"{sample.n_users:,}"
    assert metric(at, "objectives") == str(len(sample.objectives))
    assert metric(at, "date range") == charts.format_date_range(summary["first_ts"],
                                                                summary["last_ts"])
    objectives = at.table[0].value
    assert list(objectives.index) == list(sample.objectives)
    gauc = explore.single_score_gauc(sample)
    for name in sample.objectives:
        assert objectives.loc[name, "base rate"] == pytest.approx(summary["base_rate"][name])
        assert objectives.loc[name, "single-score GAUC"] == pytest.approx(gauc[name])
    assert any("no row was dropped" in s.value for s in at.success)


def upload(at: AppTest, name: str, content: bytes) -> AppTest:
    at.radio(key="data:source").set_value("Upload")
    run_ok(at)
    at.file_uploader(key="data:upload").set_value((name, content, "application/octet-stream"))
    run_ok(at)
    button(at, "Load").click()
    return run_ok(at)


def test_a_bad_upload_shows_the_loader_error_and_keeps_the_logs(at, sample):
    upload(at, "logs.csv", b"request_id,user_id,item_id,pred_click,label_click\nr1,u1,i1,high,1\n")
    assert any("'pred_click'" in e and "must be numeric" in e for e in errors(at))
    assert at.session_state[state.DATA].label == "bundled sample"
    assert metric(at, "rows") == f"{sample.n_rows:,}"


def test_an_upload_with_other_column_names_is_loaded_through_the_mapping_form(at, log_frame):
    renamed = log_frame.rename(columns={"request_id": "search_id", "pred_click": "p_ctr",
                                        "label_click": "is_click"}).drop(columns=["pred_dwell",
                                                                                  "label_dwell"])
    upload(at, "feed.csv", renamed.to_csv(index=False).encode())
    assert any("no objective found" in e for e in errors(at))
    at.selectbox(key="map:request").set_value("search_id")
    at.text_input(key="map:name:0").set_value("click")
    at.selectbox(key="map:score:0").set_value("p_ctr")
    at.selectbox(key="map:label:0").set_value("is_click")
    button(at, "Load with this mapping").click()
    run_ok(at)
    assert not errors(at)
    assert metric(at, "rows") == f"{len(renamed):,}"
    assert at.session_state[state.DATA].schema.objective("click").score_column == "p_ctr"
    assert Path(at.session_state[state.DATA].source).name != "feed.csv"


def test_a_bad_mapping_shows_the_schema_error(at, log_frame):
    frame = log_frame.rename(columns={"pred_click": "p_ctr"})[["request_id", "user_id", "item_id",
                                                              "p_ctr", "label_click"]]
    upload(at, "feed.csv", frame.to_csv(index=False).encode())
    at.text_input(key="map:name:0").set_value("no spaces allowed")
    button(at, "Load with this mapping").click()
    run_ok(at)
    assert any("objective name 'no spaces allowed' is not valid" in e for e in errors(at))
    assert at.session_state[state.DATA].label == "bundled sample"


def test_rows_with_nan_are_refused_then_dropped_and_counted(at, log_frame):
    log_frame.loc[[3, 7], "pred_click"] = np.nan
    content = log_frame.to_csv(index=False).encode()
    upload(at, "nan.csv", content)
    assert any("'pred_click': 2 row(s)" in e and "nan_policy='drop'" in e for e in errors(at))
    at.checkbox(key="data:drop_nan").check()
    button(at, "Load").click()
    run_ok(at)
    assert not errors(at)
    assert metric(at, "rows") == f"{len(log_frame) - 2:,}"
    excluded = at.table[1].value
    assert excluded["rows"].tolist() == [2]


def test_uploads_are_stored_under_a_hashed_name_in_a_private_directory(monkeypatch):
    monkeypatch.setattr(st, "session_state", {})
    path = state.save_upload("../../etc/passwd.csv", b"a,b\n1,2\n")
    assert path.parent.name.startswith("fusion-upload-")
    assert path.name.startswith("logs-") and path.suffix == ".csv" and "passwd" not in path.name
    assert oct(path.parent.stat().st_mode)[-3:] == "700"
    again = state.save_upload("other.csv", b"a,b\n3,4\n")
    assert not path.exists() and again.exists()  # one upload per session is kept
    with pytest.raises(fusion.SourceError, match="unknown format '.sh'"):
        state.save_upload("run.sh", b"#!/bin/sh")
    monkeypatch.setattr(state, "MAX_UPLOAD_MB", 0)
    with pytest.raises(fusion.SourceError, match="over the 0 MB limit"):
        state.save_upload("big.csv", b"a,b\n1,2\n")


def test_build_where_turns_widget_values_into_structured_filters():
    days = (dt.date(2026, 3, 2), dt.date(2026, 3, 8))
    assert state.build_where({"surface": [], "segment": []}, "ts", days, days) == []
    assert state.build_where({"surface": ["feed", "search"]}, None, None, None) == [
        ("surface", "in", ["feed", "search"])]
    assert state.build_where({}, "when", (days[0], days[0]), days) == [
        ("when", ">=", "2026-03-02 00:00:00"), ("when", "<", "2026-03-03 00:00:00")]


def test_filters_apply_on_every_page(at, sample):
    at.multiselect(key="filter:surface").set_value(["feed"])
    run_ok(at)
    feed = fusion.load_logs(state.SAMPLE_LOGS, where=[("surface", "in", ["feed"])])
    assert metric(at, "rows") == f"{feed.n_rows:,}"
    assert "(filtered)" in at.sidebar.caption[-1].value
    on_page(at, "tune")
    formula = at.session_state[state.FORMULA]
    baseline = state.default_formula(feed, formula.kind)
    pd.testing.assert_frame_equal(tuned_table(at),
                                  as_shown(fusion.evaluate(feed, formula, baseline=baseline)))

    day = sample.summary()["first_ts"].date()
    at.date_input(key="filter:dates").set_value((day, day))
    on_page(at, "data")
    one_day = fusion.load_logs(state.SAMPLE_LOGS, where=[
        ("surface", "in", ["feed"]), ("ts", ">=", f"{day} 00:00:00"),
        ("ts", "<", f"{day + dt.timedelta(days=1)} 00:00:00")])
    assert metric(at, "rows") == f"{one_day.n_rows:,}"


# --- Distributions -----------------------------------------------------------------------
def test_distributions_page_shows_each_objective(at, sample):
    on_page(at, "distributions")
    at.selectbox(key="dist:objective").set_value("dwell")
    at.checkbox(key="dist:log").check()
    at.selectbox(key="dist:split").set_value("surface")
    run_ok(at)
    gauc = explore.single_score_gauc(sample)["dwell"]
    assert metric(at, "dwell score's GAUC on its own label") == f"{gauc:.4f}"
    charts_shown = at.get("plotly_chart")
    assert len(charts_shown) == 3
    histogram = json.loads(charts_shown[0].proto.spec)
    surfaces = sorted(sample.slices["surface"].categories)
    assert sorted(t["name"] for t in histogram["data"]) == surfaces
    assert histogram["layout"]["xaxis"]["type"] == "log"
    downloads = {d.label for d in at.download_button}
    assert downloads == {"histogram data as CSV", "reliability data as CSV",
                         "correlation matrix as CSV"}
    at.radio(key="dist:view").set_value("ECDF")
    run_ok(at)
    assert "ECDF data as CSV" in {d.label for d in at.download_button}


# --- Tune --------------------------------------------------------------------------------
def test_moving_a_slider_changes_the_metrics_and_the_url(at, sample):
    on_page(at, "tune")
    before = tuned_table(at)
    assert (before.filter(like="Δ") == "+0.0%").all().all()  # equal weights are the baseline
    assert at.query_params["kind"] == "product"
    at.slider(key="tune:w:click").set_value(0.8)
    run_ok(at)
    after = tuned_table(at)
    assert after.loc["click", "gauc"] != before.loc["click", "gauc"]
    formula = at.session_state[state.FORMULA]
    assert formula.weights["click"] == 0.8
    expected = fusion.evaluate(sample, formula, baseline=state.default_formula(sample))
    pd.testing.assert_frame_equal(after, as_shown(expected))
    assert at.query_params["w.click"] == "0.8"


def test_a_shared_url_reproduces_the_tune_page(sample):
    at = new_app()
    at.query_params = {"kind": "sum", "w.click": "0.7", "w.like": "0.3", "t.click": "percentile"}
    run_ok(at.switch_page("views/tune.py"))
    formula = at.session_state[state.FORMULA]
    assert (formula.kind, formula.transforms["click"]) == ("sum", "percentile")
    assert formula.weight_vector(sample.objectives).tolist() == [
        {"click": 0.7, "like": 0.3}.get(o, 0.0) for o in sample.objectives]
    assert at.slider(key="tune:w:click").value == 0.7
    assert at.slider(key="tune:w:dwell").value == 0.0
    assert at.query_params["t.click"] == "percentile"
    assert state.formula_from_query(at.query_params) == at.session_state[state.FORMULA]


@pytest.mark.parametrize("formula", [
    fusion.Formula.product({"click": 0.25, "dwell": 0.75}, alphas={"dwell": 1e-06}),
    fusion.Formula.sum({"click": 1.0, "dwell": 2.0}, transforms={"dwell": "log"},
                       alphas={"dwell": 0.5}),
    fusion.Formula.rank({"like": 0.1, "click": 0.9}, k=10.0),
])
def test_formulas_round_trip_through_query_parameters(formula):
    assert state.formula_from_query(state.formula_to_query(formula)) == formula


def test_query_parameters_that_are_not_numbers_are_refused():
    assert state.formula_from_query({"w.click": "1"}) is None
    with pytest.raises(fusion.FormulaError, match="'w.click': 'lots' is not a number"):
        state.formula_from_query({"kind": "sum", "w.click": "lots"})


def test_a_bad_url_or_bad_weights_show_the_formula_error_and_keep_the_last_formula(sample):
    at = new_app()
    at.query_params = {"kind": "product", "w.nope": "1"}
    run_ok(at.switch_page("views/tune.py"))
    assert any("'nope'" in e for e in errors(at))
    kept = at.session_state[state.FORMULA]
    for name in sample.objectives:
        at.slider(key=f"tune:w:{name}").set_value(0.0)
    run_ok(at)
    assert any("all 4 weight(s) are 0" in e for e in errors(at))
    assert at.session_state[state.FORMULA] == kept
    assert len(at.table) == 3  # the metrics and the re-ranked request are still shown


def test_the_re_ranked_request_lists_the_top_ten_with_labels(at, sample):
    on_page(at, "tune")
    at.number_input(key="sample:request").set_value(5)
    run_ok(at)
    before, after = at.table[1].value, at.table[2].value
    assert len(before) == len(after) == min(10, int(np.diff(sample.group_offsets)[5]))
    assert list(after.columns) == ["item", "fused score", *sample.objectives]
    assert after["fused score"].is_monotonic_decreasing


# --- Pareto and Export -------------------------------------------------------------------
def run_search(at: AppTest, budget: int = 20, study: str = "") -> AppTest:
    """Run a search from the Pareto page's form (``study``: the name to save it under)."""
    on_page(at, "pareto")
    at.number_input(key="pareto:budget").set_value(budget)
    at.text_input(key="pareto:study").set_value(study)
    button(at, "Run search").click()
    return run_ok(at)


def test_search_select_and_export(at, sample, tmp_path):
    run_search(at)
    assert not errors(at)
    result = at.session_state[state.SEARCH]
    assert len(result.candidates) == 20
    assert at.status[0].label.startswith("Evaluated 20 candidates")
    assert metric(at, "hypervolume") == f"{result.hypervolume:.5g}"
    scatter = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in scatter["data"]][:4] == ["infeasible", "dominated", "front",
                                                        "baseline"]

    # What the chart's on_select callback stores for a clicked point.
    chosen = int(result.front["candidate_id"].iloc[-1])
    at.session_state[state.SELECTED] = chosen
    run_ok(at)
    assert at.session_state[state.FORMULA] == result.formula(chosen)

    on_page(at, "tune")
    assert at.slider(key="tune:w:click").value == result.formula(chosen).weights["click"]

    on_page(at, "export")
    shown = tuned_table(at)
    exported = tmp_path / "fusion.json"
    exported.write_text(at.code[0].value)
    config = fusion.load_config(exported, sample)
    assert config.formula == result.formula(chosen)  # already on the simplex: kept exactly
    again = fusion.evaluate(sample, config.formula, metrics=config.metric_names(),
                            baseline=config.baseline)
    assert again.to_frame()["value"].tolist() == config.metrics_frame()["value"].tolist()
    pd.testing.assert_frame_equal(shown, as_shown(again))
    assert any("Against the baseline" in m.value and "click gauc" in m.value for m in at.markdown)
    assert at.download_button(key="export:download").label == "Download JSON"

    at.radio(key="export:format").set_value("SQL")
    run_ok(at)
    assert at.code[0].value.startswith("-- Fusion Tuner config 'fusion'")


def test_a_saved_study_opens_on_the_pareto_page(at, tmp_path, monkeypatch):
    monkeypatch.setattr(state, "STUDY_DIR", tmp_path / "studies")
    run_search(at, budget=20, study="../feed weights")
    searched = at.session_state[state.SEARCH]
    assert [p.name for p in state.saved_studies()] == ["feed-weights.duckdb"]

    fresh = run_ok(new_app())
    on_page(fresh, "pareto")
    fresh.selectbox(key="pareto:saved").set_value(state.saved_studies()[0])
    button(fresh, "Open").click()
    run_ok(fresh)
    opened = fresh.session_state[state.SEARCH]
    pd.testing.assert_frame_equal(opened.candidates, searched.candidates)
    assert not fresh.info  # same logs: no note that the study describes other ones
    fresh.multiselect(key="filter:surface").set_value(["search"])
    run_ok(fresh)
    assert any("ran on other logs or filters" in i.value for i in fresh.info)

    fresh.text_input(key="pareto:open_path").set_value(str(tmp_path / "missing.duckdb"))
    button(fresh, "Open").click()
    run_ok(fresh)
    assert any("does not exist" in e for e in errors(fresh))
    assert fresh.session_state[state.SEARCH] is opened


def test_study_names_cannot_leave_the_study_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "STUDY_DIR", tmp_path)
    assert state.study_path("../../etc/cron.d/x") == tmp_path / "etc-cron.d-x.duckdb"
    assert state.study_path("weekly.duckdb") == tmp_path / "weekly.duckdb"
    with pytest.raises(fusion.StudyError, match="study name '..'"):
        state.study_path("..")


def test_an_imported_config_is_re_evaluated_and_a_bad_one_is_refused(at, sample, tmp_path):
    formula = fusion.Formula.rank({"click": 0.5, "dwell": 0.5})
    config = fusion.export_config(formula, sample, name="ranked",
                                  metrics=fusion.evaluate(sample, formula))
    on_page(at, "export")
    at.file_uploader(key="export:import").set_value(("ranked.json", config.to_json().encode(),
                                                      "application/json"))
    run_ok(at)
    table = at.table[-1].value
    assert table.loc[("click", "gauc"), "now"] == table.loc[("click", "gauc"), "exported"]
    button(at, "Load into Tune").click()
    run_ok(at)
    assert at.session_state[state.FORMULA] == config.formula

    broken = json.loads(config.to_json())
    broken["format"] = 99
    at.file_uploader(key="export:import").set_value(("broken.json", json.dumps(broken).encode(),
                                                      "application/json"))
    run_ok(at)
    assert any("format" in e and "99" in e for e in errors(at))
    assert at.session_state[state.FORMULA] == config.formula


# --- large logs: interactive pages on a request sample ------------------------------------
def test_large_logs_are_tuned_and_searched_on_a_request_sample_and_exported_on_all(
        sample, monkeypatch):
    monkeypatch.setattr(state, "INTERACTIVE_ROWS", 50_000)
    state._request_sample_cached.clear()
    n = sample.n_requests * 50_000 // sample.n_rows
    part = sample.sample_requests(n, seed=0)
    assert 45_000 < part.n_rows < 55_000
    at = run_ok(new_app())
    assert metric(at, "rows") == f"{sample.n_rows:,}"   # the Data page: every row

    on_page(at, "tune")
    note = f"{n:,} of {sample.n_requests:,} requests ({part.n_rows:,} of {sample.n_rows:,} rows"
    assert any(note in c.value for c in at.caption), [c.value for c in at.caption]
    at.slider(key="tune:w:click").set_value(0.8)
    run_ok(at)
    formula = at.session_state[state.FORMULA]
    pd.testing.assert_frame_equal(tuned_table(at), as_shown(
        fusion.evaluate(part, formula, baseline=state.default_formula(part))))

    run_search(at)
    assert at.session_state[state.SEARCH].logs_fingerprint == part.fingerprint
    assert not at.info  # the search ran on the logs the page shows: the sample

    on_page(at, "export")
    assert any(f"every row: {sample.n_rows:,} rows" in c.value for c in at.caption)
    pd.testing.assert_frame_equal(tuned_table(at), as_shown(fusion.evaluate(
        sample, fusion.stored_formula(formula), baseline=state.default_formula(sample))))


def test_small_logs_are_used_whole_on_every_page(at, sample):
    assert state.INTERACTIVE_ROWS >= sample.n_rows
    on_page(at, "tune")
    assert not any("Interactive on a sample" in c.value for c in at.caption)


def test_the_dashboard_opens_the_logs_given_after_the_script(parquet_log, log_frame, monkeypatch):
    assert state.launch_choice([]) == state.sample_choice()
    assert state.launch_choice(["--logs", str(parquet_log)]).source == str(parquet_log)
    assert state.launch_options(["--log", "x"]).logs is None  # no abbreviations
    monkeypatch.setattr("sys.argv", ["app/streamlit_app.py", "--logs", str(parquet_log)])
    at = run_ok(new_app())
    assert metric(at, "rows") == f"{len(log_frame):,}"
    assert at.radio(key="data:source").value == "Path or glob"
    assert at.text_input(key="data:path").value == str(parquet_log)


def test_interactive_rows_can_be_set_or_switched_off_after_the_script(sample, monkeypatch):
    monkeypatch.setattr("sys.argv", ["app/streamlit_app.py", "--interactive-rows", "50000"])
    assert state.interactive_logs(sample).n_rows < 55_000
    monkeypatch.setattr(state, "INTERACTIVE_ROWS", 1000)
    monkeypatch.setattr("sys.argv", ["app/streamlit_app.py", "--interactive-rows", "0"])
    assert state.interactive_logs(sample) is sample


@pytest.mark.parametrize("value, message", [("lots", "invalid int value: 'lots'"),
                                            ("-5", "must be >= 0")])
def test_a_malformed_dashboard_option_is_shown_and_stops_the_app(value, message, monkeypatch):
    monkeypatch.setattr("sys.argv", ["app/streamlit_app.py", "--interactive-rows", value])
    at = new_app().run()
    assert not at.exception
    assert len(errors(at)) == 1 and "--interactive-rows" in errors(at)[0] \
        and message in errors(at)[0], errors(at)
    assert not at.metric  # stopped before any page ran

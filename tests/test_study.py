"""Studies: incremental persistence, resume after a crash or SIGKILL, read-only loading."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fusion import Formula, StudyError, load_logs, open_study, search
from fusion.study import connect
from tests.conftest import make_log_frame

ROOT = Path(__file__).resolve().parents[1]
search_module = importlib.import_module("fusion.search")

OBJECTIVES = [("click", "gauc"), ("dwell", "ndcg@10"), ("like", "gauc")]
ALPHAS = {"click": 0.01, "dwell": 1.0, "like": 0.01}
SETTINGS = dict(kind="product", objectives=OBJECTIVES, constraints=["like:gauc>=0.99*baseline"],
                budget=60, seed=3, alphas=ALPHAS, batch_size=10, reference_point="nadir")


@pytest.fixture(scope="module")
def logs_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "logs.parquet"
    make_log_frame(100, seed=5, min_size=4, max_size=30,
                   objectives=("click", "dwell", "like")).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def logs(logs_path):
    return load_logs(logs_path)


def same_result(a, b) -> None:
    """Equal candidates (all but timing), fronts, hypervolume and picks."""
    columns = [c for c in a.candidates.columns if c != "elapsed_s"]
    pd.testing.assert_frame_equal(a.candidates[columns], b.candidates[columns])
    pd.testing.assert_frame_equal(a.front[columns], b.front[columns])
    assert a.hypervolume == b.hypervolume and a.reference_point == b.reference_point
    assert (a.knee_id, a.preferred_id) == (b.knee_id, b.preferred_id)


class Stop(Exception):
    pass


def stop_after(batches: int):
    def progress(done, total, hypervolume):
        if done >= batches * SETTINGS["batch_size"]:
            raise Stop
    return progress


# --- round trip ------------------------------------------------------------------------------
def test_open_study_gives_the_search_result(logs, tmp_path):
    path = tmp_path / "study.duckdb"
    result = search(logs, study=path, method="auto", preference=[1, 2, 1], **SETTINGS)
    loaded = open_study(path)
    same_result(result, loaded)
    pd.testing.assert_series_equal(result.candidates["elapsed_s"], loaded.candidates["elapsed_s"])
    pd.testing.assert_frame_equal(result.history, loaded.history)
    assert loaded.baseline_formula == result.baseline_formula
    assert loaded.baseline_metrics == result.baseline_metrics
    assert loaded.baseline_source == "equal weights (default)"
    assert loaded.logs_fingerprint == logs.fingerprint
    assert loaded.logs_schema == logs.schema
    assert loaded.settings == result.settings and loaded.complete
    assert loaded.formula(result.knee_id) == result.formula(result.knee_id)


def test_a_finished_study_is_replayed_without_evaluating(logs, tmp_path, monkeypatch):
    path = tmp_path / "study.duckdb"
    first = search(logs, study=path, method="auto", **SETTINGS)
    monkeypatch.setattr(search_module, "evaluate_many", _fail_if_called)
    again = search(logs, study=path, method="auto", **SETTINGS)
    same_result(first, again)


def _fail_if_called(*args, **kwargs):
    raise AssertionError("a stored batch was evaluated again")


@pytest.mark.parametrize("method", ["auto", "sobol", "random"])
def test_an_interrupted_search_resumes_to_the_uninterrupted_result(logs, tmp_path, method):
    path = tmp_path / "study.duckdb"
    with pytest.raises(Stop):
        search(logs, study=path, method=method, progress=stop_after(3), **SETTINGS)
    partial = open_study(path)
    assert len(partial.candidates) == 30 and not partial.complete
    assert partial.history["evaluations"].tolist() == [10, 20, 30]

    resumed = search(logs, study=path, method=method, **SETTINGS)
    uninterrupted = search(logs, method=method, **SETTINGS)
    same_result(resumed, uninterrupted)
    assert resumed.complete
    # The clock continues from the stored batches.
    assert resumed.candidates["elapsed_s"].is_monotonic_increasing


def test_a_search_killed_with_sigkill_keeps_every_finished_batch_and_resumes(
        logs_path, logs, tmp_path):
    path = tmp_path / "study.duckdb"
    settings = dict(SETTINGS, budget=150)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import fusion
        logs = fusion.load_logs({str(logs_path)!r})
        def progress(done, total, hypervolume):
            print("batch", done, flush=True)
        fusion.search(logs, study={str(path)!r}, method="auto", progress=progress,
                      **{settings!r})
        print("finished", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        reported = 0
        while reported < 3 * SETTINGS["batch_size"]:
            line = child.stdout.readline()
            assert line.startswith("batch"), f"child stopped early: {line!r}"
            reported = int(line.split()[1])
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL

    kept = open_study(path)
    stored = len(kept.candidates)
    assert reported <= stored < settings["budget"]
    assert stored % SETTINGS["batch_size"] == 0     # no partial batch
    assert not kept.complete

    resumed = search(logs, study=path, method="auto", **settings)
    uninterrupted = search(logs, method="auto", **settings)
    same_result(resumed, uninterrupted)
    pd.testing.assert_frame_equal(kept.candidates.drop(columns=["pareto_rank"]),
                                  resumed.candidates.iloc[:stored].drop(columns=["pareto_rank"]))


# --- refusing other logs and other settings ---------------------------------------------------
def test_a_study_for_other_logs_is_refused(logs, tmp_path):
    path = tmp_path / "study.duckdb"
    search(logs, study=path, method="sobol", **dict(SETTINGS, budget=10))
    other = logs.sample_requests(50, seed=1)
    with pytest.raises(StudyError, match="recorded for other logs: .* content_hash"):
        search(other, study=path, method="sobol", **dict(SETTINGS, budget=10))


def test_a_study_with_other_settings_is_refused_naming_each_difference(logs, tmp_path):
    path = tmp_path / "study.duckdb"
    search(logs, study=path, method="sobol", **dict(SETTINGS, budget=10))
    with pytest.raises(StudyError) as caught:
        search(logs, study=path, method="random", **dict(SETTINGS, budget=20))
    message = str(caught.value)
    assert "2 difference(s)" in message
    assert "settings.budget: 10 (study) vs 20 (now)" in message
    assert "settings.method: 'sobol' (study) vs 'random' (now)" in message
    with pytest.raises(StudyError, match="baseline"):
        search(logs, study=path, method="sobol",
               baseline=Formula.product({"click": 1.0, "dwell": 0.0, "like": 0.0}, ALPHAS),
               **dict(SETTINGS, budget=10))


def test_preference_and_reference_may_change_on_resume(logs, tmp_path):
    path = tmp_path / "study.duckdb"
    search(logs, study=path, method="sobol", **dict(SETTINGS, budget=20))
    again = search(logs, study=path, method="sobol", preference={"like": 1},
                   **dict(SETTINGS, budget=20, reference_point="baseline"))
    loaded = open_study(path)
    assert loaded.settings["preference"] == {"click:gauc": 0.0, "dwell:ndcg@10": 0.0,
                                             "like:gauc": 1.0}
    assert loaded.reference_source == again.reference_source == "baseline"
    assert loaded.preferred_id == again.preferred_id is not None


def test_a_tampered_batch_is_detected_on_replay(logs, tmp_path):
    path = tmp_path / "study.duckdb"
    search(logs, study=path, method="sobol", **dict(SETTINGS, budget=20))
    con = duckdb.connect(str(path))
    con.execute("UPDATE candidates SET weights = [0.5, 0.25, 0.25] WHERE candidate_id = 12")
    con.close()
    with pytest.raises(StudyError, match="stored batch 1 holds other candidates"):
        search(logs, study=path, method="sobol", **dict(SETTINGS, budget=20))


# --- reading ---------------------------------------------------------------------------------
def test_open_study_errors(tmp_path):
    with pytest.raises(StudyError, match="does not exist"):
        open_study(tmp_path / "missing.duckdb")
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE study_meta (key VARCHAR, value VARCHAR)")
    con.close()
    with pytest.raises(StudyError, match="is not a study: table 'candidates' is missing"):
        open_study(other)
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database")
    with pytest.raises(StudyError, match="cannot open study"):
        open_study(text)


def test_a_study_of_another_format_is_refused(logs, tmp_path):
    path = tmp_path / "study.duckdb"
    search(logs, study=path, method="sobol", **dict(SETTINGS, budget=10))
    con = duckdb.connect(str(path))
    con.execute("UPDATE study_meta SET value = '99' WHERE key = 'format'")
    con.close()
    with pytest.raises(StudyError, match="has format 99; this version reads format 1"):
        open_study(path)


def test_open_study_is_read_only_and_sandboxed(logs, tmp_path):
    path = tmp_path / "study.duckdb"
    search(logs, study=path, method="sobol", **dict(SETTINGS, budget=10))
    con = connect(path, read_only=True)
    try:
        with pytest.raises(duckdb.Error):
            con.execute("DELETE FROM candidates")
        with pytest.raises(duckdb.Error):
            con.execute("SELECT * FROM read_csv(?)", [str(tmp_path / "x.csv")])
        with pytest.raises(duckdb.Error):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


def test_stored_text_is_bound_not_spliced(logs, tmp_path):
    class Config:
        name = "prod'); DROP TABLE candidates; --"
        formula = Formula.product({"click": 0.6, "dwell": 0.2, "like": 0.2}, ALPHAS)

    path = tmp_path / "study.duckdb"
    search(logs, study=path, method="sobol", baseline=Config(), **dict(SETTINGS, budget=10))
    loaded = open_study(path)
    assert loaded.baseline_source == f"config {Config.name!r}"
    assert len(loaded.candidates) == 10
    con = duckdb.connect(str(path), read_only=True)
    meta = dict(con.execute("SELECT key, value FROM study_meta").fetchall())
    con.close()
    assert json.loads(meta["settings"])["seed"] == 3
    assert np.isclose(json.loads(meta["baseline"])["formula"]["weights"]["click"], 0.6)

"""The command line, driven in-process through ``main(argv)`` (plus one real subprocess)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fusion
from fusion import cli
from fusion.cli import (
    ProgressBar,
    format_table,
    main,
    parse_assignments,
    parse_objectives,
    parse_where,
)
from fusion.config import load_config
from fusion.evaluate import evaluate
from fusion.formulas import Formula
from fusion.study import open_study

from .conftest import make_log_frame

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("sample", "evaluate", "search", "front", "export", "bench")
WHERE = "surface in feed,search"
SEARCH = ["--objectives", "click:gauc,dwell:ndcg@10", "--constraint", "like:gauc>=0.9*baseline",
          "--budget", "12", "--kind", "sum", "--method", "sobol", "--seed", "3",
          "--preference", "click:gauc=2,dwell=1", "--where", WHERE]


def run(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` with its stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def log_path(workdir: Path) -> Path:
    path = workdir / "logs.parquet"
    make_log_frame(50, seed=7, objectives=("click", "dwell", "like")).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def searched(workdir: Path, log_path: Path) -> tuple[Path, str, str]:
    study = workdir / "study.duckdb"
    status, out, err = run(["search", log_path, *SEARCH, "--study", study])
    assert status == 0, err
    return study, out, err


# --- help and parsing -----------------------------------------------------------------------
def test_help_lists_every_subcommand_in_a_real_process():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "fusion", "--help"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m fusion")
    for name in SUBCOMMANDS:
        assert f"\n    {name} " in done.stdout


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in SUBCOMMANDS[:-1])])
def test_help_exits_zero(argv):
    status, out, err = run(argv)
    assert status == 0 and out.startswith("usage: python -m fusion") and err == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("surface==feed", ("surface", "==", "feed")),
        ("  surface != 'feed' ", ("surface", "!=", "feed")),
        ("n>=3", ("n", ">=", 3)),
        ("n<=-3", ("n", "<=", -3)),
        ("score>0.5", ("score", ">", 0.5)),
        ("score<1e-3", ("score", "<", 0.001)),
        ('code=="007"', ("code", "==", "007")),
        ("surface==nan", ("surface", "==", "nan")),
        ("user_segment in new,casual", ("user_segment", "in", ["new", "casual"])),
        ("n in 1, 2,3.5", ("n", "in", [1, 2, 3.5])),
        ("surface not in feed", ("surface", "not_in", ["feed"])),
    ],
)
def test_where_parses_strictly_into_structured_filters(text, expected):
    assert parse_where(text) == expected


@pytest.mark.parametrize("text", ["surface=feed", "surface==", "==feed", "a===b", "surface in",
                                  "surface in a,,b", "surface ~ feed", "surface"])
def test_malformed_where_is_rejected(text):
    with pytest.raises(argparse.ArgumentTypeError, match="malformed filter"):
        parse_where(text)


def test_weights_and_objectives_parse_strictly():
    assert parse_assignments("click=0.5, dwell = 0.3") == {"click": "0.5", "dwell": "0.3"}
    assert parse_objectives("click:gauc,dwell:NDCG@10") == [("click", "gauc"), ("dwell", "ndcg@10")]
    for bad in ("click", "click=", "=1", "click=1,,dwell=2", "2x=1"):
        with pytest.raises(argparse.ArgumentTypeError, match="malformed weights"):
            parse_assignments(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="'click' is given twice"):
        parse_assignments("click=1,click=2")
    with pytest.raises(argparse.ArgumentTypeError, match="malformed objective 'click'"):
        parse_objectives("click")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown metric 'mrr'"):
        parse_objectives("click:mrr")
    with pytest.raises(argparse.ArgumentTypeError, match="click:gauc is given twice"):
        parse_objectives("click:gauc,click:GAUC")


# --- bad input: one line on stderr, exit status 2 ---------------------------------------------
BAD = {
    "unknown subcommand": (["nope"], "invalid choice: 'nope'"),
    "unknown option": (["front", "{study}", "--bogus"], "unrecognized arguments: --bogus"),
    "no formula": (["evaluate", "{logs}"], "one of the arguments --config --weights is required"),
    "weight not a number": (["evaluate", "{logs}", "--weights", "click=abc"],
                            "the value of 'click' must be a number, got 'abc'"),
    "weight without value": (["evaluate", "{logs}", "--weights", "click"], "malformed weights"),
    "negative weight": (["evaluate", "{logs}", "--weights", "click=-1"], "1 weight(s) are negative"),
    "bad where": (["evaluate", "{logs}", "--weights", "click=1", "--where", "surface=feed"],
                  "malformed filter 'surface=feed'"),
    "where on unknown column": (["evaluate", "{logs}", "--weights", "click=1", "--where",
                                 "country==fr"], "1 column(s) not in the source: 'country'"),
    "bad metric": (["evaluate", "{logs}", "--weights", "click=1", "--metrics", "ndcg@0"],
                   "needs a cut-off K >= 1"),
    "missing logs": (["evaluate", "{missing}", "--weights", "click=1"], "does not exist"),
    "missing config": (["evaluate", "{logs}", "--config", "{missing}"], "does not exist"),
    "config is not JSON": (["evaluate", "{logs}", "--config", "{logs}"], "neither JSON nor YAML"),
    "unknown objective": (["evaluate", "{logs}", "--weights", "clack=1"],
                          "objective(s) not in the logs, e.g. 'clack'"),
    "option of another kind": (["evaluate", "{logs}", "--weights", "click=1", "--kind", "rank",
                                "--alphas", "click=1"], "'rank' formulas take no alphas"),
    "log of zero": (["evaluate", "{logs}", "--weights", "click=1", "--alphas", "click=0"],
                    "score + alpha <= 0"),
    "malformed objectives": (["search", "{logs}", "--objectives", "click"],
                             "malformed objective 'click'"),
    "malformed constraint": (["search", "{logs}", "--objectives", "click:gauc", "--constraint",
                              "click:gauc>>1"], "constraint 'click:gauc>>1'"),
    "constraint on unknown objective": (["search", "{logs}", "--objectives", "click:gauc",
                                         "--constraint", "buy:gauc>=0.9*baseline"],
                                        "unknown objective 'buy'"),
    "zero budget": (["search", "{logs}", "--objectives", "click:gauc", "--budget", "0"],
                    "argument --budget: must be a whole number >= 1, got '0'"),
    "missing study": (["front", "{missing}"], "does not exist"),
    "not a study": (["front", "{logs}"], "cannot open study"),
    "unknown candidate": (["export", "{study}", "--candidate", "x", "--out", "{out}"],
                          "--candidate 'x' is not in the study (12 candidates, e.g. 0, 1, 2)"),
    "unknown suffix": (["export", "{study}", "--candidate", "knee", "--out", "c.txt"],
                       "unknown suffix '.txt'"),
    "sample into a missing directory": (["sample", "--rows", "100", "--out", "{missing}/f.parquet"],
                                        "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_line_and_status_2(case, log_path, searched, workdir):
    argv, message = BAD[case]
    names = {"logs": log_path, "study": searched[0], "missing": workdir / "missing",
             "out": workdir / "bad.json"}
    status, out, err = run([a.format(**names) for a in argv])
    assert status == 2
    assert out == ""
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


def test_config_options_conflict_with_weights(log_path, workdir):
    config = workdir / "plain.json"
    _export(config, log_path)
    status, _, err = run(["evaluate", log_path, "--config", config, "--kind", "sum"])
    assert status == 2 and err == "error: --kind goes with --weights, not with --config\n"


def _export(path: Path, log_path: Path) -> None:
    from fusion.config import export_config

    export_config(Formula.sum({"click": 1.0}), fusion.load_logs(log_path), path=path)


# --- evaluate ------------------------------------------------------------------------------
def test_evaluate_prints_a_table_and_exact_json(log_path):
    argv = ["evaluate", log_path, "--kind", "product", "--weights", "click=0.6,dwell=0.4",
            "--alphas", "click=0.01,dwell=1", "--metrics", "gauc,top@5", "--where", WHERE]
    status, out, err = run(argv)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "formula:  product click=0.6 (alpha 0.01) dwell=0.4 (alpha 1)"
    assert lines[3].split() == ["objective", "metric", "value", "groups", "skipped"]
    assert [line.split()[:2] for line in lines[4:]] == [
        [o, m] for o in ("click", "dwell", "like") for m in ("gauc", "top@5")]

    status, out, _ = run([*argv, "--json"])
    payload = json.loads(out)
    logs = fusion.load_logs(log_path, where=[("surface", "in", ["feed", "search"])])
    expected = evaluate(logs, Formula.product({"click": 0.6, "dwell": 0.4},
                                              alphas={"click": 0.01, "dwell": 1.0}),
                        metrics=["gauc", "top@5"])
    assert payload["logs"]["rows"] == logs.n_rows
    assert payload["logs"]["filters"] == [["surface", "in", ["feed", "search"]]]
    assert [(r["objective"], r["metric"], r["value"]) for r in payload["metrics"]] == [
        (o, m, expected[o, m]) for o in ("click", "dwell", "like") for m in ("gauc", "top@5")]
    assert payload["exported_metrics"] is None


def test_alphas_not_given_take_their_defaults_for_the_logs(log_path):
    # The fixture's click scores reach 0: a product of plain logs is undefined there.
    logs = fusion.load_logs(log_path)
    assert fusion.formulas.default_alphas(logs)["click"] == 1e-6
    status, out, err = run(["evaluate", log_path, "--kind", "product", "--weights",
                            "click=0.6,dwell=0.4", "--alphas", "dwell=2", "--json"])
    assert status == 0, err
    expected = evaluate(logs, Formula.product({"click": 0.6, "dwell": 0.4},
                                              alphas={"click": 1e-6, "dwell": 2.0}))
    payload = json.loads(out)
    assert payload["formula"]["alphas"] == {"click": 1e-6, "dwell": 2.0}
    assert [r["value"] for r in payload["metrics"]] == expected.to_frame()["value"].tolist()


def test_evaluate_with_baseline_and_intervals(log_path, workdir):
    baseline = workdir / "baseline.yaml"
    _export(baseline, log_path)
    status, out, _ = run(["evaluate", log_path, "--kind", "rank", "--weights", "click=1,like=1",
                          "--k", "5", "--baseline", baseline, "--ci", "0.8", "--n-boot", "20",
                          "--metrics", "gauc"])
    assert status == 0
    lines = out.splitlines()
    assert lines[1] == "baseline: sum click=1"
    assert lines[4].split() == ["objective", "metric", "value", "baseline", "delta", "80%", "CI",
                                "groups", "skipped"]
    assert lines[5].split()[4].endswith("%") and lines[5].count("[") == 1


# --- search, front, export -------------------------------------------------------------------
def test_search_shows_progress_front_and_baseline(searched):
    study, out, err = searched
    assert err.startswith("search: 12 candidates, hypervolume ") and err.count("\n") == 1
    result = open_study(study)
    assert len(result.candidates) == 12
    assert out.startswith("baseline:    equal weights (default): sum click=0.3333 dwell=0.3333 "
                          "like=0.3333\n")
    assert "constraints: like:gauc>=0.9*baseline\n" in out
    table = out.split("\n\n")[1].splitlines()
    assert table[0].split() == ["candidate", "pick", "w:click", "w:dwell", "w:like", "click:gauc",
                                "dwell:ndcg@10", "like:gauc"]
    assert sorted(int(line.split()[0]) for line in table[1:]) == sorted(result.front["candidate_id"])
    picks = {int(line.split()[0]): line.split()[1] for line in table[1:]
             if line.split()[1] in ("knee", "preferred", "knee,preferred")}
    assert result.knee_id in picks and result.preferred_id in picks
    assert f"export {study} --candidate knee --out config.json" in out


def test_front_prints_the_saved_study_and_search_resumes(searched, log_path):
    study, search_out, _ = searched
    status, out, err = run(["front", study])
    assert status == 0 and err == ""
    assert out.strip() == search_out.split("\n\nexport a candidate")[0].strip()
    status, again, _ = run(["search", log_path, *SEARCH, "--study", study])
    assert status == 0 and again == search_out  # replayed from the study, not recomputed


def test_search_against_a_baseline_config_without_a_study(log_path, workdir):
    baseline = workdir / "production.json"
    _export(baseline, log_path)
    status, out, err = run(["search", log_path, "--objectives", "click:gauc,like:gauc",
                            "--budget", "3", "--kind", "sum", "--baseline", baseline])
    assert status == 0, err
    assert out.startswith("baseline:    config 'fusion': sum click=1\n")
    assert "export a candidate" not in out


def test_search_refuses_a_study_of_other_settings(searched, log_path):
    status, _, err = run(["search", log_path, *SEARCH[:-2], "--study", searched[0]])
    assert status == 2 and "recorded for other logs" in err and err.count("\n") == 1


@pytest.mark.parametrize(("candidate", "suffix"), [("knee", ".json"), ("preferred", ".yaml"),
                                                   ("5", ".yml")])
def test_export_then_evaluate_reproduces_the_metrics_exactly(searched, log_path, workdir,
                                                             candidate, suffix):
    study = searched[0]
    result = open_study(study)
    out_path = workdir / f"exported-{candidate}{suffix}"
    status, out, err = run(["export", study, "--candidate", candidate, "--out", out_path])
    assert status == 0, err
    candidate_id = {"knee": result.knee_id, "preferred": result.preferred_id}.get(candidate, 5)
    assert out.startswith(f"wrote {out_path}: candidate {candidate_id} (sum ")

    config = load_config(out_path)
    assert config.name == out_path.stem
    assert config.formula == result.formula(candidate_id)
    assert config.baseline == result.baseline_formula
    assert config.evaluated_on["filters"] == [["surface", "in", ["feed", "search"]]]
    assert {r["metric"] for r in config.metrics} == {"gauc", "ndcg@10", "top@10"}
    click = next(r for r in config.metrics if (r["objective"], r["metric"]) == ("click", "gauc"))
    assert click["value"] == result.candidates.loc[candidate_id, "click:gauc"]
    assert click["baseline"] == result.baseline_metrics["click:gauc"]

    status, out, err = run(["evaluate", log_path, "--config", out_path, "--where", WHERE, "--json"])
    assert status == 0, err
    payload = json.loads(out)
    assert payload["exported_metrics"]["status"] == "reproduced"
    assert payload["exported_metrics"]["compared"] == 9
    fresh = {(r["objective"], r["metric"]): (r["value"], r["baseline"]) for r in payload["metrics"]}
    exported = {(r["objective"], r["metric"]): (r["value"], r["baseline"]) for r in config.metrics}
    assert fresh == exported

    status, out, _ = run(["evaluate", log_path, "--config", out_path, "--where", WHERE])
    assert status == 0
    assert out.rstrip().endswith("exported metrics reproduced exactly: 9 of 9 equal")


def test_evaluate_config_on_other_logs_or_with_other_values(searched, log_path, workdir):
    path = workdir / "knee.json"
    assert run(["export", searched[0], "--candidate", "knee", "--out", path])[0] == 0
    status, out, _ = run(["evaluate", log_path, "--config", path])  # without the filter
    assert status == 0
    assert "note: these are not the logs the config was evaluated on" in out

    data = json.loads(path.read_text())
    data["metrics"][0]["value"] += 1e-12
    path.write_text(json.dumps(data))
    status, out, _ = run(["evaluate", log_path, "--config", path, "--where", WHERE])
    assert status == 1
    assert "exported metrics NOT reproduced: 1 of 9 differ, e.g. click gauc" in out


def test_export_sql(searched, workdir):
    path = workdir / "knee.sql"
    assert run(["export", searched[0], "--candidate", "knee", "--out", path])[0] == 0
    result = open_study(searched[0])
    lines = path.read_text().splitlines()
    assert lines[0].startswith("-- Fusion Tuner config 'knee' (format 1, tool ")
    assert lines[2].startswith("-- weights: click=")
    assert lines[-1] == result.formula(result.knee_id).to_sql()


def test_export_refuses_changed_logs(tmp_path, log_path):
    logs = tmp_path / "logs.parquet"
    logs.write_bytes(log_path.read_bytes())
    study = tmp_path / "study.duckdb"
    status, _, err = run(["search", logs, "--objectives", "click:gauc", "--budget", "2",
                          "--kind", "sum", "--method", "random", "--study", study])
    assert status == 0, err
    make_log_frame(50, seed=8, objectives=("click", "dwell", "like")).to_parquet(logs)
    status, out, err = run(["export", study, "--candidate", "0", "--out", tmp_path / "c.json"])
    assert status == 2 and out == ""
    assert err.startswith(f"error: the logs of study '{study}' changed since the search: ")
    assert "run the search again" in err and not (tmp_path / "c.json").exists()


def test_preferred_needs_a_preference(tmp_path, log_path):
    study = tmp_path / "study.duckdb"
    assert run(["search", log_path, "--objectives", "click:gauc", "--budget", "2", "--kind",
                "sum", "--study", study])[0] == 0
    status, _, err = run(["export", study, "--candidate", "preferred", "--out", tmp_path / "c.json"])
    assert status == 2 and "run without --preference" in err


# --- sample and bench ----------------------------------------------------------------------
def test_sample_passes_its_arguments_and_reports_progress(tmp_path, monkeypatch):
    calls = []

    def write_feed(out_path, rows, *, seed=0, progress=None, **options):
        calls.append((out_path, rows, seed, options))
        progress(rows // 2, rows)
        progress(rows, rows)
        return out_path

    monkeypatch.setattr("fusion.sample.write_feed", write_feed)
    path = tmp_path / "feed.parquet"
    status, out, err = run(["sample", "--rows", "1000", "--out", path, "--seed", "4"])
    assert status == 0 and out == ""
    assert calls == [(path, 1000, 4, {})]
    assert err.startswith(f"sample: wrote 1,000 rows to {path} in ") and err.count("\n") == 1
    run(["sample", "--rows", "1000", "--out", path, "--train-rows", "2000"])
    assert calls[-1][3] == {"train_rows": 2000}


@pytest.mark.slow
def test_sample_writes_a_loadable_feed(tmp_path):
    path = tmp_path / "feed.parquet"
    status, out, err = run(["sample", "--rows", "150", "--out", path, "--seed", "2",
                            "--train-rows", "1000"])
    assert status == 0 and out == ""
    assert err.startswith(f"sample: wrote 150 rows to {path} in ") and err.count("\n") == 1
    logs = fusion.load_logs(path)
    assert logs.n_rows == 150
    assert logs.objectives == ("click", "dwell", "like", "conversion")


@pytest.fixture
def bench_dir(tmp_path, monkeypatch) -> Path:
    (tmp_path / "bench_echo.py").write_text(
        "import json, pathlib, sys\n"
        "pathlib.Path(sys.argv[0]).with_suffix('.args').write_text(json.dumps(sys.argv[1:]))\n")
    (tmp_path / "bench_fail.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "helper.py").write_text("raise SystemExit('not a benchmark')\n")
    monkeypatch.setattr(cli, "BENCH_DIR", tmp_path)
    return tmp_path


def test_bench_dispatches_with_pass_through_arguments(bench_dir):
    status, out, _ = run(["bench", "--list"])
    assert status == 0 and out.split() == ["echo", "fail"]
    status, out, _ = run(["bench", "echo", "--rows", "10", "--help"])
    assert status == 0 and out == "== bench_echo --rows 10 --help\n"
    assert json.loads((bench_dir / "bench_echo.args").read_text()) == ["--rows", "10", "--help"]
    status, out, _ = run(["bench", "all", "-q"])
    assert status == 3 and out == "== bench_echo -q\n== bench_fail -q\n"
    assert json.loads((bench_dir / "bench_echo.args").read_text()) == ["-q"]
    status, _, err = run(["bench", "nope"])
    assert status == 2 and err == "error: unknown benchmark 'nope'; available: echo, fail\n"


# --- pieces --------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_only_on_a_terminal():
    quiet = io.StringIO()
    bar = ProgressBar("search", stream=quiet)
    bar(5, 10, 0.5)
    assert quiet.getvalue() == ""
    bar.close("10 candidates")
    assert quiet.getvalue().startswith("search: 10 candidates in ")

    terminal = _Terminal()
    bar = ProgressBar("search", stream=terminal, width=10, min_interval=0.0)
    bar(5, 10, 0.25)
    assert terminal.getvalue().startswith("\rsearch [#####.....] 5/10  50%  hypervolume 0.25  ")
    bar(10, 10)
    bar.close("done")
    assert terminal.getvalue().count("\r") == 3 and terminal.getvalue().endswith(" s\n")


def test_format_table_aligns_columns():
    table = format_table({"name": ["a", "bbb"], "value": ["1.5", "10.25"]}, left=("name",))
    assert table.splitlines() == ["name  value", "a       1.5", "bbb   10.25"]


def test_interrupts_and_closed_pipes_end_quietly(monkeypatch, searched):
    def interrupted(result):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_front_report", interrupted)
    status, _, err = run(["front", searched[0]])
    assert status == 130 and err == "\ninterrupted\n"

    def closed_pipe(result):
        raise BrokenPipeError

    monkeypatch.setattr(cli, "_front_report", closed_pipe)
    status, _, err = run(["front", searched[0]])
    assert status == 1 and err == ""

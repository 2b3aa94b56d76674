"""Hostile text: SQL in filters, column names, mappings, configs and study names; hostile
upload names and sizes. Nothing may read or write outside what is allowed: each test
snapshots the files of its directory before and after, and no output may show /etc/passwd.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import tomllib
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import streamlit as st
from hypothesis import given, settings
from hypothesis import strategies as st_h
from streamlit.testing.v1 import AppTest

import fusion
from app import state
from fusion import cli
from tests.conftest import make_log_frame

ROOT = Path(__file__).resolve().parents[2]
PASSWD_LINE = "root:x:0:0"  # the first line of /etc/passwd on any Linux
HOSTILE = [
    "x'; COPY (SELECT 1) TO '{out}'; --",
    "' OR 1=1 --",
    'feed"; DROP TABLE t; --',
    "read_csv('/etc/passwd')",
    "'); SELECT * FROM read_csv('/etc/passwd'); --",
    "'; ATTACH '{db}' AS pwn; --",
    "'; INSTALL httpfs; LOAD httpfs; --",
    "x\"); COPY (SELECT * FROM read_csv('/etc/passwd')) TO '{out}'; --",
    "$1",
    "?",
    "line\nbreak",
]
ALLOWED = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def snapshot(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def hostile(directory: Path) -> list[str]:
    return [t.format(out=directory / "pwn.csv", db=directory / "pwn.db") for t in HOSTILE]


@pytest.fixture
def workdir(tmp_path) -> Path:
    path = tmp_path / "logs.parquet"
    make_log_frame(30, seed=2).to_parquet(path)
    return tmp_path


def run_cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue() + err.getvalue()


# --- the CLI --where parser --------------------------------------------------------------------
@pytest.mark.parametrize("op", ["==", "!=", ">=", " in ", " not in "])
def test_cli_where_with_hostile_values_and_columns(workdir, op):
    before = snapshot(workdir)
    logs = str(workdir / "logs.parquet")
    everything = fusion.load_logs(logs).n_rows
    for text in hostile(workdir):
        for where in (f"surface{op}{text}", f"{text}{op}feed"):
            status, output = run_cli(["evaluate", logs, "--weights", "click=1,dwell=1",
                                      "--where", where, "--json"])
            assert PASSWD_LINE not in output
            if status == 0:
                # Parsed as a plain value of a real column: the rows it keeps are the ones
                # the structured filter keeps.
                column, parsed_op, value = cli.parse_where(where)
                assert column == "surface", where
                kept = fusion.load_logs(logs, where=[(column, parsed_op, value)]).n_rows
                assert f'"rows": {kept}' in output and kept <= everything, output
            else:
                assert status == 2 and output.startswith("error: "), output
                assert output.count("\n") == 1, output
    assert snapshot(workdir) == before


@given(st_h.text(max_size=40))
@ALLOWED
def test_cli_where_parser_gives_a_filter_or_a_usage_error(text):
    try:
        column, op, value = cli.parse_where(text)
    except cli.argparse.ArgumentTypeError:
        return
    assert op in (*fusion.logs.FILTER_OPS, "in", "not_in")
    assert isinstance(column, str) and column.strip() == column and column


def test_filters_never_reach_another_file(workdir):
    secret = workdir / "secret.csv"
    secret.write_text("request_id,user_id,item_id,pred_click,label_click\n1,1,1,0.5,1\n")
    before = snapshot(workdir)
    logs = workdir / "logs.parquet"
    for value in hostile(workdir) + [str(secret), f"read_csv('{secret}')"]:
        for op in ("==", "<", "between", "in"):
            arg = [value, value] if op in ("between", "in") else value
            try:
                loaded = fusion.load_logs(logs, where=[("surface", op, arg)])
            except fusion.FusionError as exc:
                assert PASSWD_LINE not in str(exc) and "0.5" not in str(exc)
            else:
                assert set(loaded.slices["surface"].categories) <= {"feed", "search", "related"}
    assert snapshot(workdir) == before


# --- column names: files, YAML mappings, configs, SQL --------------------------------------
def _hostile_frame(directory: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    frame = make_log_frame(20, seed=4)
    names = hostile(directory)
    renames = {"request_id": names[2], "pred_click": names[0], "label_click": names[3],
               "pred_dwell": names[7], "label_dwell": names[5], "surface": names[4]}
    return frame.rename(columns=renames), renames


def test_yaml_mapping_with_hostile_column_names_loads_exactly(tmp_path):
    frame, renames = _hostile_frame(tmp_path)
    (tmp_path / "logs.parquet").unlink(missing_ok=True)
    frame.to_parquet(tmp_path / "hostile.parquet")
    import yaml

    mapping = {"request": renames["request_id"],
               "objectives": {"click": {"score": renames["pred_click"],
                                        "label": renames["label_click"]},
                              "dwell": {"score": renames["pred_dwell"],
                                        "label": renames["label_dwell"], "kind": "graded"}}}
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(mapping))
    before = snapshot(tmp_path)
    logs = fusion.load_logs(tmp_path / "hostile.parquet", schema=tmp_path / "map.yaml",
                            where=[(renames["surface"], "==", "feed")])
    feed = frame[frame[renames["surface"]] == "feed"].sort_values(renames["request_id"],
                                                                  kind="stable")
    np.testing.assert_array_equal(logs.scores[:, 0], feed[renames["pred_click"]].to_numpy(np.float32))
    np.testing.assert_array_equal(logs.labels[:, 1], feed[renames["label_dwell"]].to_numpy(np.float32))
    # A mapping naming a hostile column the file lacks is refused before any query.
    for name in hostile(tmp_path):
        bad = dict(mapping, user=name + " missing")
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(fusion.MissingColumnError):
            fusion.load_logs(tmp_path / "hostile.parquet", schema=tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").unlink()
    assert snapshot(tmp_path) == before


def _hostile_logs(tmp_path):
    """Logs whose id and objective columns carry hostile names, mapped by a Schema; and the
    renames (canonical name -> hostile name)."""
    frame, renames = _hostile_frame(tmp_path)
    schema = fusion.Schema(objectives=(
        fusion.Objective("click", renames["pred_click"], renames["label_click"]),
        fusion.Objective("dwell", renames["pred_dwell"], renames["label_dwell"], kind="graded"),
    ), request_column=renames["request_id"])
    frame.to_parquet(tmp_path / "hostile.parquet")
    return fusion.load_logs(tmp_path / "hostile.parquet", schema=schema), renames


def test_formula_sql_quotes_hostile_column_names_and_matches_fuse(tmp_path):
    logs, renames = _hostile_logs(tmp_path)
    table = pd.DataFrame({"row": np.arange(logs.n_rows),
                          renames["request_id"]: np.repeat(logs.request_ids, logs.request_sizes()),
                          renames["pred_click"]: logs.scores[:, 0].astype(np.float64),
                          renames["pred_dwell"]: logs.scores[:, 1].astype(np.float64)})
    columns = {"click": renames["pred_click"], "dwell": renames["pred_dwell"]}
    before = snapshot(tmp_path)
    formulas = [fusion.Formula.product({"click": 0.6, "dwell": 0.4}, alphas={"click": 0.01,
                                                                              "dwell": 1.0}),
                fusion.Formula.sum({"click": 0.5, "dwell": 0.5},
                                   transforms={"click": "zscore", "dwell": "percentile"}),
                fusion.Formula.rank({"click": 0.3, "dwell": 0.7}, k=10)]
    for formula in formulas:
        sql = formula.to_sql(score_columns=columns, request_column=renames["request_id"])
        query = f"SELECT {sql} AS fused FROM t ORDER BY row"
        assert len(duckdb.extract_statements(query)) == 1, sql   # nothing spliced after it
        con = fusion.logs.connect_sandboxed([])
        con.register("t", table)
        fused = con.execute(query).fetchnumpy()["fused"]
        con.close()
        np.testing.assert_allclose(fused, formula.fuse(logs), rtol=1e-9, atol=1e-12)
    assert snapshot(tmp_path) == before


def test_configs_with_hostile_names_and_columns(tmp_path):
    logs, renames = _hostile_logs(tmp_path)
    formula = fusion.Formula.product({"click": 0.5, "dwell": 0.5}, alphas={"click": 0.01,
                                                                           "dwell": 1.0})
    for i, name in enumerate(hostile(tmp_path) + ["../../escape", "/etc/passwd"]):
        for suffix in (".json", ".yaml", ".sql"):
            path = tmp_path / f"config{i}{suffix}"
            config = fusion.export_config(formula, logs, path=path, name=name,
                                          metrics=fusion.evaluate(logs, formula))
            text = path.read_text()
            if suffix == ".sql":
                # Only comment lines and the one expression: a name cannot start a statement.
                body = [line for line in text.splitlines() if not line.startswith("--")]
                assert body == [config.sql]
                assert len(duckdb.extract_statements(f"SELECT {config.sql} FROM t")) == 1
                continue
            loaded = fusion.load_config(path, logs)
            assert loaded.name == name and loaded.formula == formula
            assert loaded.objectives["click"]["score_column"] == renames["pred_click"]
    # A config reading a hostile score column the logs lack is refused naming it.
    spec = fusion.load_config(tmp_path / "config0.json").to_dict()
    spec["objectives"]["click"]["score_column"] = "x'); COPY t TO '/tmp/x'; --"
    spec["formula"]["objectives"]["click"]["score_column"] = "x'); COPY t TO '/tmp/x'; --"
    with pytest.raises(fusion.ConfigError, match="absent from the logs"):
        fusion.FusionConfig.from_dict(spec, logs=logs)
    assert {p.name for p in tmp_path.iterdir()} == (
        {"hostile.parquet"} | {f"config{i}{s}" for i in range(len(HOSTILE) + 2)
                               for s in (".json", ".yaml", ".sql")})


# --- study paths ----------------------------------------------------------------------------
@given(st_h.text(min_size=1, max_size=30) | st_h.sampled_from(
    ["..", "../../etc/passwd", "/etc/cron.d/x", "a/../../b", "~/.bashrc", "..\\..\\x", "\x00x",
     ".duckdb", "con", "x" * 300]))
@ALLOWED
def test_study_names_stay_in_the_study_directory(name):
    original = state.STUDY_DIR
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "studies"
        state.STUDY_DIR = root
        try:
            path = state.study_path(name)
        except fusion.StudyError:
            return
        finally:
            state.STUDY_DIR = original
        assert path.parent == root and path.suffix == ".duckdb"
        assert path.resolve().parent == root.resolve()
        assert "/" not in path.name and "\x00" not in path.name and not path.name.startswith(".")
        assert os.listdir(directory) == ["studies"]   # nothing created beside it


def test_cli_study_on_a_file_that_is_not_a_study_is_refused_untouched(workdir):
    target = workdir / "notes.duckdb"
    target.write_bytes(b"my notes, not a database\n")
    status, output = run_cli(["search", str(workdir / "logs.parquet"), "--objectives",
                              "click:gauc", "--budget", "2", "--study", str(target)])
    assert status == 2 and output.strip().startswith("error:"), output
    assert target.read_bytes() == b"my notes, not a database\n"


# --- uploads --------------------------------------------------------------------------------
@given(st_h.text(max_size=40).map(lambda s: s + ".csv") | st_h.sampled_from(
    ["../../etc/passwd.csv", "/etc/passwd.csv", "..\\..\\x.parquet", "a/../../../b.json",
     ".csv", "x.csv\x00.sh", "x.CSV", "~/y.parquet", "x.csv/../y.parquet"]))
@ALLOWED
def test_upload_names_never_reach_the_file_system(name):
    saved = {}
    original = st.session_state
    try:
        st.session_state = saved  # the helper only needs a mapping for its directory
        try:
            path = state.save_upload(name, b"a,b\n1,2\n")
        except fusion.SourceError:
            return
        directory = Path(saved["_upload_dir"])
        assert path.parent == directory and path.resolve().parent == directory.resolve()
        assert os.listdir(directory) == [path.name]
        assert path.name.startswith("logs-") and path.suffix[1:] in state.UPLOAD_TYPES
        assert path.read_bytes() == b"a,b\n1,2\n"
    finally:
        st.session_state = original
        if "_upload_dir" in saved:
            for leftover in Path(saved["_upload_dir"]).iterdir():
                leftover.unlink()
            Path(saved["_upload_dir"]).rmdir()


def test_the_upload_limit_is_the_documented_one_and_enforced(monkeypatch):
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == state.MAX_UPLOAD_MB == 200
    monkeypatch.setattr(st, "session_state", {})
    limit = state.MAX_UPLOAD_MB * 2**20
    at_limit = state.save_upload("ok.csv", bytes(limit))
    assert at_limit.stat().st_size == limit
    with pytest.raises(fusion.SourceError, match="over the 200 MB limit"):
        state.save_upload("big.csv", bytes(limit + 1))
    assert os.listdir(at_limit.parent) == [at_limit.name]  # refused: the last upload stays
    at_limit.unlink()
    at_limit.parent.rmdir()


def test_a_hostile_upload_name_in_the_dashboard(tmp_path):
    app = AppTest.from_file(ROOT / "app" / "streamlit_app.py", default_timeout=120)
    app.run()
    app.radio(key="data:source").set_value("Upload").run()
    content = make_log_frame(10, seed=1).to_csv(index=False).encode()
    app.file_uploader(key="data:upload").set_value(("../../../tmp/evil.csv", content, "text/csv"))
    app.run()
    next(b for b in app.button if b.label == "Load").click().run()
    assert not app.exception
    source = Path(app.session_state[state.DATA].source)
    assert source.parent == Path(app.session_state["_upload_dir"])
    assert source.read_bytes() == content and "evil" not in source.name
    assert not Path("/tmp/evil.csv").exists()
    shutil.rmtree(source.parent)  # the app never removes a session's upload directory


def test_server_paths_do_not_show_other_files(tmp_path):
    app = AppTest.from_file(ROOT / "app" / "streamlit_app.py", default_timeout=120)
    app.run()
    app.radio(key="data:source").set_value("Path or glob").run()
    for text in ["/etc/passwd", "/etc/*", "/etc/passwd; read_csv('/etc/passwd')",
                 "../../../../etc/passwd"]:
        app.text_input(key="data:path").set_value(text).run()
        next(b for b in app.button if b.label == "Load").click().run()
        assert not app.exception
        shown = " ".join(str(e.value) for e in [*app.error, *app.markdown, *app.caption,
                                                *app.code, *app.dataframe, *app.table])
        assert PASSWD_LINE not in shown
        assert app.session_state[state.DATA].label == "bundled sample"

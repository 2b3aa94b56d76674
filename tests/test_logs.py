"""Loading logs: formats, schemas, filters, sampling, bad input and sandboxing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fusion
from fusion.logs import connect_sandboxed

from .conftest import make_log_frame


def _sorted_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["request_id", "item_id"], kind="stable").reset_index(drop=True)


def _assert_matches_frame(logs: fusion.LogSet, frame: pd.DataFrame) -> None:
    expected = _sorted_frame(frame)
    assert logs.n_rows == len(expected)
    assert logs.n_requests == expected["request_id"].nunique()
    sizes = expected.groupby("request_id", sort=True).size().to_numpy()
    np.testing.assert_array_equal(logs.request_sizes(), sizes)
    assert list(logs.request_ids) == sorted(expected["request_id"].unique())
    for j, name in enumerate(logs.objectives):
        # Rows tie on (request_id, item_id) only with equal item ids; compare per request sums.
        got = pd.Series(logs.scores[:, j].astype(np.float64)).groupby(
            np.repeat(np.arange(logs.n_requests), logs.request_sizes())).sum().to_numpy()
        want = expected.groupby("request_id", sort=True)[f"pred_{name}"].sum().to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert logs.scores.dtype == np.float32 and logs.scores.flags.c_contiguous
    assert logs.labels.dtype == np.float32 and logs.labels.flags.c_contiguous
    assert logs.group_offsets.dtype == np.int64


# --- formats -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_each_format_loads_the_same_logs(tmp_path, log_frame, fmt):
    path = tmp_path / f"logs.{fmt}"
    if fmt == "parquet":
        log_frame.to_parquet(path)
    elif fmt == "csv":
        log_frame.to_csv(path, index=False)
    else:
        log_frame.assign(ts=log_frame["ts"].astype(str)).to_json(path, orient="records", lines=True)
    logs = fusion.load_logs(path)
    assert logs.objectives == ("click", "dwell")
    assert [o.kind for o in logs.schema.objectives] == ["binary", "graded"]
    assert [o.gain for o in logs.schema.objectives] == ["linear", "log1p"]
    _assert_matches_frame(logs, log_frame)
    assert set(logs.slices) == {"surface"}
    assert logs.ts is not None and len(logs.ts) == logs.n_rows


def test_glob_and_list_sources_concatenate(tmp_path):
    first, second = make_log_frame(20, seed=1), make_log_frame(20, seed=2)
    second["request_id"] = "b" + second["request_id"]
    first.to_parquet(tmp_path / "part-1.parquet")
    second.to_parquet(tmp_path / "part-2.parquet")
    both = pd.concat([first, second])
    by_glob = fusion.load_logs(str(tmp_path / "part-*.parquet"))
    by_list = fusion.load_logs([tmp_path / "part-1.parquet", tmp_path / "part-2.parquet"])
    _assert_matches_frame(by_glob, both)
    assert by_glob.fingerprint["content_hash"] == by_list.fingerprint["content_hash"]
    assert len(by_glob.fingerprint["sources"]) == 2


def test_load_is_independent_of_file_row_order(tmp_path, log_frame):
    log_frame.to_parquet(tmp_path / "a.parquet")
    log_frame.sample(frac=1.0, random_state=3).to_parquet(tmp_path / "b.parquet")
    a, b = fusion.load_logs(tmp_path / "a.parquet"), fusion.load_logs(tmp_path / "b.parquet")
    np.testing.assert_array_equal(a.group_offsets, b.group_offsets)
    assert a.fingerprint["content_hash"] == b.fingerprint["content_hash"]


# --- schemas -------------------------------------------------------------------------------
def test_yaml_mapping_with_odd_names_and_two_objectives(tmp_path):
    rng = np.random.default_rng(5)
    n = 300
    frame = pd.DataFrame({
        "search_id": np.repeat(np.arange(30), 10),
        "uid": rng.integers(0, 12, n),
        "doc": np.arange(n),
        "country": rng.choice(["de", "fr"], n),
        "p_ctr": rng.random(n),
        "is_click": rng.integers(0, 2, n),
        "p_watch": rng.random(n) * 1000,
        "play_time_ms": rng.exponential(20000, n),
    })
    frame.to_parquet(tmp_path / "odd.parquet")
    (tmp_path / "mapping.yaml").write_text(
        "request: search_id\nuser: uid\nitem: doc\nts: null\n"
        "objectives:\n"
        "  ctr: {score: p_ctr, label: is_click}\n"
        "  watch: {score: p_watch, label: play_time_ms, kind: graded, positive_threshold: 30000}\n"
    )
    logs = fusion.load_logs(tmp_path / "odd.parquet", schema=tmp_path / "mapping.yaml")
    assert logs.objectives == ("ctr", "watch")
    watch = logs.schema.objective("watch")
    assert (watch.kind, watch.positive_threshold, watch.gain) == ("graded", 30000.0, "log1p")
    assert logs.n_requests == 30 and logs.ts is None
    assert set(logs.slices) == {"country"}
    expected_rate = float((frame["play_time_ms"] > 30000).mean())
    assert logs.summary()["base_rate"]["watch"] == pytest.approx(expected_rate)


def test_schema_object_with_a_single_objective(parquet_log):
    schema = fusion.Schema(objectives=(fusion.Objective("c", "pred_click", "label_click"),),
                           slice_columns=())
    logs = fusion.load_logs(parquet_log, schema=schema)
    assert logs.objectives == ("c",) and logs.scores.shape[1] == 1 and logs.slices == {}


def test_mapping_naming_a_missing_column_suggests_the_close_one(parquet_log):
    schema = {"objectives": {"click": {"score": "pred_clik", "label": "label_click"}}}
    with pytest.raises(fusion.MissingColumnError, match=r"'pred_clik' \(did you mean 'pred_click'\?\)"):
        fusion.load_logs(parquet_log, schema=schema)


@pytest.mark.parametrize("text, match", [
    ("objectives: []\n", "objectives"),
    ("objectives:\n  click: {score: pred_click}\n", "needs 'score' and 'label'"),
    ("objectives:\n  click: {score: pred_click, label: label_click, kind: ordinal}\n", "kind 'ordinal'"),
    ("objectives:\n  click: {score: pred_click, label: label_click}\nfoo: 1\n", "unknown schema field"),
    ("objectives: [unclosed\n", "not valid YAML"),
])
def test_malformed_mapping_files(tmp_path, parquet_log, text, match):
    (tmp_path / "m.yaml").write_text(text)
    with pytest.raises(fusion.SchemaError, match=match):
        fusion.load_logs(parquet_log, schema=tmp_path / "m.yaml")


# --- bad input -----------------------------------------------------------------------------
def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "bad.parquet") -> Path:
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


def test_no_objective_found(tmp_path, log_frame):
    path = _write(tmp_path, log_frame.drop(columns=["label_click", "label_dwell"]))
    with pytest.raises(fusion.NoObjectivesError, match="pred_<name>"):
        fusion.load_logs(path)


def test_missing_id_column(tmp_path, log_frame):
    path = _write(tmp_path, log_frame.rename(columns={"request_id": "req"}))
    with pytest.raises(fusion.MissingColumnError, match="'request_id'"):
        fusion.load_logs(path)


def test_non_numeric_scores_name_the_column_count_and_example(tmp_path, log_frame):
    frame = log_frame.copy()
    frame["pred_click"] = frame["pred_click"].astype(str)
    frame.loc[[3, 7], "pred_click"] = "high"
    with pytest.raises(fusion.ColumnTypeError, match=r"'pred_click'.*2 row\(s\).*'high'"):
        fusion.load_logs(_write(tmp_path, frame, "bad.csv"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise_by_default(tmp_path, log_frame, bad):
    frame = log_frame.copy()
    frame.loc[[2, 5, 9], "pred_dwell"] = bad
    with pytest.raises(fusion.InvalidValueError, match=r"'pred_dwell': 3 row\(s\) are missing, NaN or inf"):
        fusion.load_logs(_write(tmp_path, frame))


def test_nan_policy_drop_counts_dropped_rows(tmp_path, log_frame):
    frame = log_frame.copy()
    frame.loc[[2, 5, 9], "pred_dwell"] = np.nan
    frame.loc[[5, 11], "label_click"] = np.nan
    logs = fusion.load_logs(_write(tmp_path, frame), nan_policy="drop")
    assert logs.n_rows == len(frame) - 4
    assert logs.excluded == {"pred_dwell: missing, NaN or inf": 3,
                             "label_click: missing, NaN or inf": 2}
    assert np.isfinite(logs.scores).all() and np.isfinite(logs.labels).all()
    assert logs.group_offsets[-1] == logs.n_rows


def test_probability_outside_unit_interval(tmp_path, log_frame):
    frame = log_frame.copy()
    frame.loc[4, "pred_click"] = 1.5
    with pytest.raises(fusion.InvalidValueError, match=r"'pred_click': 1 row\(s\) are outside \[0, 1\].*1\.5"):
        fusion.load_logs(_write(tmp_path, frame))


def test_negative_labels(tmp_path, log_frame):
    frame = log_frame.copy()
    frame.loc[[1, 2], "label_dwell"] = -3.0
    with pytest.raises(fusion.InvalidValueError, match=r"'label_dwell': 2 row\(s\) are negative"):
        fusion.load_logs(_write(tmp_path, frame))


def test_binary_label_that_is_not_zero_or_one(tmp_path, log_frame):
    schema = {"objectives": {"click": {"score": "pred_click", "label": "label_click"}}}
    frame = log_frame.copy()
    frame.loc[0, "label_click"] = 2
    with pytest.raises(fusion.InvalidValueError, match="not 0 or 1"):
        fusion.load_logs(_write(tmp_path, frame), schema=schema)


def test_empty_file(tmp_path, log_frame):
    with pytest.raises(fusion.EmptyLogsError, match="no rows"):
        fusion.load_logs(_write(tmp_path, log_frame.iloc[:0]))


def test_filter_that_leaves_nothing(parquet_log):
    with pytest.raises(fusion.EmptyLogsError, match="after the filters"):
        fusion.load_logs(parquet_log, where=[("surface", "==", "nowhere")])


@pytest.mark.parametrize("content", [b"\x00\x01garbage\xff" * 100, b""])
def test_a_file_that_is_not_a_table(tmp_path, content):
    path = tmp_path / "logs.parquet"
    path.write_bytes(content)
    with pytest.raises(fusion.SourceError, match="cannot read"):
        fusion.load_logs(path)


def test_missing_file_and_unmatched_glob(tmp_path):
    with pytest.raises(fusion.SourceError, match="does not exist"):
        fusion.load_logs(tmp_path / "nope.parquet")
    with pytest.raises(fusion.SourceError, match="matches no file"):
        fusion.load_logs(str(tmp_path / "*.parquet"))
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(fusion.SourceError, match="unknown format"):
        fusion.load_logs(tmp_path / "x.xlsx")


# --- filters -------------------------------------------------------------------------------
@pytest.mark.parametrize("where, expected", [
    ([("surface", "==", "feed")], lambda f: f["surface"] == "feed"),
    ([("surface", "!=", "feed")], lambda f: f["surface"] != "feed"),
    ([("pred_click", "<", 0.5)], lambda f: f["pred_click"] < 0.5),
    ([("pred_click", "<=", 0.5)], lambda f: f["pred_click"] <= 0.5),
    ([("pred_click", ">", 0.5)], lambda f: f["pred_click"] > 0.5),
    ([("pred_click", ">=", 0.5)], lambda f: f["pred_click"] >= 0.5),
    ([("surface", "in", ["feed", "search"])], lambda f: f["surface"].isin(["feed", "search"])),
    ([("surface", "not_in", ["feed"])], lambda f: ~f["surface"].isin(["feed"])),
    ([("pred_click", "between", (0.2, 0.4))], lambda f: f["pred_click"].between(0.2, 0.4)),
    ([("surface", "==", "feed"), ("pred_click", ">", 0.3)],
     lambda f: (f["surface"] == "feed") & (f["pred_click"] > 0.3)),
    ([("ts", ">=", "2026-11-04")], lambda f: f["ts"] >= pd.Timestamp("2026-11-04")),
])
def test_filters_keep_exactly_the_matching_rows(parquet_log, log_frame, where, expected):
    logs = fusion.load_logs(parquet_log, where=where)
    _assert_matches_frame(logs, log_frame[expected(log_frame)])
    assert logs.fingerprint["filters"] == json.loads(json.dumps(where))


@pytest.mark.parametrize("where, error, match", [
    ([("surfac", "==", "feed")], fusion.MissingColumnError, "did you mean 'surface'"),
    ([("surface", "like", "f%")], fusion.FilterError, "unknown operator 'like'"),
    ([("surface", "in", "feed")], fusion.FilterError, "takes a list"),
    ([("surface", "in", [])], fusion.FilterError, "at least one value"),
    ([("pred_click", "between", 0.3)], fusion.FilterError, r"takes \(low, high\)"),
    ([("surface", "==", ["feed"])], fusion.FilterError, "takes one value"),
    ([("pred_click", ">", "abc")], fusion.FilterError, "does not fit its column's type"),
    ([("surface", "==")], fusion.FilterError, "must be"),
])
def test_malformed_filters(parquet_log, where, error, match):
    with pytest.raises(error, match=match):
        fusion.load_logs(parquet_log, where=where)


# --- sampling ------------------------------------------------------------------------------
def test_sampling_keeps_whole_requests_reproducibly(parquet_log, log_frame):
    full = fusion.load_logs(parquet_log)
    a = fusion.load_logs(parquet_log, sample_requests=10, seed=7)
    b = fusion.load_logs(parquet_log, sample_requests=10, seed=7)
    c = fusion.load_logs(parquet_log, sample_requests=10, seed=8)
    assert a.n_requests == 10
    assert list(a.request_ids) == list(b.request_ids)
    assert list(a.request_ids) != list(c.request_ids)
    full_sizes = dict(zip(full.request_ids, full.request_sizes()))
    for request, size in zip(a.request_ids, a.request_sizes()):
        assert full_sizes[request] == size
    _assert_matches_frame(a, log_frame[log_frame["request_id"].isin(a.request_ids)])


def test_sampling_more_requests_than_exist_keeps_all(parquet_log):
    assert fusion.load_logs(parquet_log, sample_requests=10_000).n_requests == 40


def test_in_memory_request_sampling_keeps_whole_requests(parquet_log):
    full = fusion.load_logs(parquet_log)
    sample = full.sample_requests(7, seed=1)
    assert sample.n_requests == 7
    assert sample.fingerprint["content_hash"] != full.fingerprint["content_hash"]
    index = {r: i for i, r in enumerate(full.request_ids)}
    for g, request in enumerate(sample.request_ids):
        i = index[request]
        np.testing.assert_array_equal(
            sample.scores[sample.group_offsets[g]:sample.group_offsets[g + 1]],
            full.scores[full.group_offsets[i]:full.group_offsets[i + 1]])


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "5"])
def test_bad_sample_size(parquet_log, n):
    with pytest.raises(fusion.FusionError, match="sample_requests"):
        fusion.load_logs(parquet_log, sample_requests=n)


# --- sandbox -------------------------------------------------------------------------------
HOSTILE = [
    "x'; COPY (SELECT 1) TO '{out}'; --",
    "' OR 1=1 --",
    "feed\"; DROP TABLE t; --",
    "read_csv('/etc/passwd')",
    "'); SELECT * FROM read_csv('/etc/passwd'); --",
    "'; ATTACH '{db}' AS pwn; --",
    "'; INSTALL httpfs; LOAD httpfs; --",
]


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_filter_values_are_plain_values(tmp_path, parquet_log, log_frame, template):
    out, db = tmp_path / "pwn.csv", tmp_path / "pwn.db"
    value = template.format(out=out, db=db)
    with pytest.raises(fusion.EmptyLogsError):
        fusion.load_logs(parquet_log, where=[("surface", "==", value)])
    assert fusion.load_logs(parquet_log, where=[("surface", "!=", value)]).n_rows == len(log_frame)
    only_feed = fusion.load_logs(parquet_log, where=[("surface", "in", [value, "feed"])])
    assert only_feed.n_rows == int((log_frame["surface"] == "feed").sum())
    assert sorted(os.listdir(tmp_path)) == ["logs.parquet"]


@pytest.mark.parametrize("template", HOSTILE + ['surface" = \'feed\' OR "surface'])
def test_hostile_column_names_are_rejected(tmp_path, parquet_log, template):
    out, db = tmp_path / "pwn.csv", tmp_path / "pwn.db"
    with pytest.raises(fusion.MissingColumnError):
        fusion.load_logs(parquet_log, where=[(template.format(out=out, db=db), "==", "feed")])
    assert sorted(os.listdir(tmp_path)) == ["logs.parquet"]


def test_hostile_column_names_inside_the_file_are_quoted(tmp_path, log_frame):
    weird = "x\"; COPY (SELECT 1) TO 'pwn.csv'; --"
    frame = log_frame.rename(columns={"surface": weird})
    path = _write(tmp_path, frame, "weird.parquet")
    logs = fusion.load_logs(path, where=[(weird, "==", "feed")])
    assert set(logs.slices) == {weird}
    assert (logs.slices[weird] == "feed").all()
    assert sorted(os.listdir(tmp_path)) == ["weird.parquet"]


def test_sandboxed_connection_reads_and_writes_nothing_else(tmp_path, parquet_log):
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    con = connect_sandboxed([parquet_log])
    assert con.execute("SELECT count(*) FROM read_parquet(?)", [str(parquet_log)]).fetchone()[0] > 0
    attempts = [
        f"SELECT * FROM read_csv('{secret}')",
        "SELECT * FROM read_csv('/etc/passwd')",
        f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'",
        f"ATTACH '{tmp_path / 'x.db'}' AS x",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET allowed_paths = ['/']",
        "RESET lock_configuration",
    ]
    for sql in attempts:
        with pytest.raises(Exception) as info:
            con.execute(sql).fetchall()
        assert "Permission" in type(info.value).__name__ or "locked" in str(info.value) \
            or "disabled" in str(info.value), (sql, info.value)
    assert sorted(os.listdir(tmp_path)) == ["logs.parquet", "secret.csv"]


# --- fingerprint and summary ---------------------------------------------------------------
def test_fingerprint_changes_with_content_and_filters(tmp_path, log_frame):
    path = _write(tmp_path, log_frame)
    base = fusion.load_logs(path).fingerprint
    assert fusion.load_logs(path).fingerprint == base
    filtered = fusion.load_logs(path, where=[("surface", "==", "feed")]).fingerprint
    assert filtered["content_hash"] != base["content_hash"]
    changed = log_frame.copy()
    changed.loc[0, "pred_click"] = 1.0 - changed.loc[0, "pred_click"] + 0.005
    assert fusion.load_logs(_write(tmp_path, changed, "c.parquet")).fingerprint["content_hash"] \
        != base["content_hash"]


def test_summary_reports_counts_dates_and_base_rates(parquet_log, log_frame):
    summary = fusion.load_logs(parquet_log).summary()
    assert summary["rows"] == len(log_frame)
    assert summary["users"] == log_frame["user_id"].nunique()
    assert summary["first_ts"] == log_frame["ts"].min() and summary["last_ts"] == log_frame["ts"].max()
    assert summary["base_rate"]["click"] == pytest.approx(log_frame["label_click"].mean())
    assert summary["base_rate"]["dwell"] == pytest.approx((log_frame["label_dwell"] > 0).mean())

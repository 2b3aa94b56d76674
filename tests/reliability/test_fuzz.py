"""Fuzzing the log loader and the config loader.

Every generated input must end in a correct result or a specific FusionError: never another
exception, a hang, or a silently wrong number. Logs that load are compared value by value
with the generating frame, and their metrics with the brute-force oracle of ``oracle.py``.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusion
from tests.reliability import oracle

FUZZ = settings(max_examples=70, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
K_NDCG, K_TOP = 3, 2
METRICS = ["gauc", f"ndcg@{K_NDCG}", f"top@{K_TOP}"]
HOSTILE_NAMES = [
    'x"; DROP TABLE t; --', "read_csv('/etc/passwd')", "COPY (SELECT 1) TO '/tmp/pwn'",
    "'; ATTACH 'pwn.db' AS p; --", "INSTALL httpfs; LOAD httpfs", "select", "order by",
    "列 点击", "ünïcödé score", "a b", "🙂", "$1", "?",
]
CORRUPTIONS = ("none", "nan", "inf", "huge", "negative_label", "score_above_one",
               "label_two", "negative_score")


# --- generating logs ---------------------------------------------------------------------------
@st.composite
def log_cases(draw):
    n_objectives = draw(st.integers(1, 3))
    names = draw(st.lists(st.sampled_from(["click", "dwell", "like", "x", "_a", "conv2"]),
                          min_size=n_objectives, max_size=n_objectives, unique=True))
    mapped = draw(st.booleans())
    sizes = draw(st.lists(st.integers(1, 9), min_size=1, max_size=8))
    n = sum(sizes)
    text_ids = draw(st.booleans())
    request = np.repeat(np.arange(len(sizes)), sizes)
    order = draw(st.permutations(range(n)))          # rows of a request need not be adjacent
    frame = pd.DataFrame({
        "request_id": [f"r{i}é" if text_ids else int(i) * 7 - 3 for i in request],
        "user_id": request % 3,
        "item_id": np.arange(n),
    })
    kinds, columns = {}, {}
    for j, name in enumerate(names):
        graded = draw(st.booleans())
        kinds[name] = "graded" if graded else "binary"
        grid = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])   # ties are common
        if graded:
            score = draw(st.lists(st.one_of(grid, st.floats(0, 1e6, width=32)), min_size=n,
                                  max_size=n))
            label = draw(st.lists(st.one_of(st.sampled_from([0.0, 1.0, 3.0]),
                                            st.floats(0, 1e4, width=32)), min_size=n, max_size=n))
        else:
            score = draw(st.lists(st.one_of(grid, st.floats(0, 1, width=32)), min_size=n,
                                  max_size=n))
            label = draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))
        if mapped:
            score_column, label_column = draw(st.lists(
                st.sampled_from(HOSTILE_NAMES) | st.text(min_size=1, max_size=6).filter(
                    lambda s: s.isprintable()),
                min_size=2, max_size=2, unique=True))
            score_column, label_column = f"{score_column}{j}s", f"{label_column}{j}l"
        else:
            score_column, label_column = f"pred_{name}", f"label_{name}"
        frame[score_column] = np.asarray(score, dtype=np.float64)
        frame[label_column] = np.asarray(label, dtype=np.float64)
        columns[name] = (score_column, label_column)
    corruption = draw(st.sampled_from(CORRUPTIONS))
    if corruption != "none":
        row = draw(st.integers(0, n - 1))
        name = draw(st.sampled_from(names))
        score_column, label_column = columns[name]
        target, value = {
            "nan": (score_column, math.nan), "inf": (label_column, -math.inf),
            "huge": (draw(st.sampled_from([score_column, label_column])), 1e300),
            "negative_label": (label_column, -1.0), "score_above_one": (score_column, 1.5),
            "label_two": (label_column, 2.0), "negative_score": (score_column, -0.5),
        }[corruption]
        frame.loc[row, target] = value
    frame = frame.iloc[list(order)].reset_index(drop=True)
    return {
        "frame": frame, "names": names, "kinds": kinds, "columns": columns, "mapped": mapped,
        "format": draw(st.sampled_from(["parquet", "csv"])),
        "nan_policy": draw(st.sampled_from(["raise", "drop"])),
    }


def _schema(case) -> fusion.Schema:
    return fusion.Schema(objectives=tuple(
        fusion.Objective(name, *case["columns"][name], kind=case["kinds"][name])
        for name in case["names"]), ts_column=None)


def _write(case, directory: Path) -> Path:
    path = directory / f"logs.{case['format']}"
    if case["format"] == "parquet":
        case["frame"].to_parquet(path)
    else:
        case["frame"].to_csv(path, index=False)
    return path


# --- what the loader must do -------------------------------------------------------------------
def expected_load(case) -> tuple[type[fusion.FusionError] | None, pd.DataFrame, dict[str, str]]:
    """The error the loader must raise (or None), the rows it keeps, and each objective's kind.

    Mirrors the documented rules: NaN/inf raise unless dropped; a finite value beyond float32
    always raises; labels >= 0; binary labels 0/1 and binary scores in [0, 1]; graded scores
    >= 0; auto-detected objectives are binary exactly when every kept label is 0 or 1.
    """
    frame = case["frame"]
    value_columns = [c for name in case["names"] for c in case["columns"][name]]
    values = frame[value_columns].to_numpy(dtype=np.float64)
    huge = np.isfinite(values) & (np.abs(values) > np.finfo(np.float32).max)
    if huge.any():
        if case["format"] == "parquet":
            return fusion.InvalidValueError, frame, {}
        values = np.where(huge, np.inf, values)  # CSV text is parsed straight to float32
    finite = np.isfinite(values).all(axis=1)
    if not finite.all() and case["nan_policy"] == "raise":
        return fusion.InvalidValueError, frame, {}
    kept = frame[finite]
    if kept.empty:
        return fusion.EmptyLogsError, kept, {}
    kinds = {}
    for name in case["names"]:
        score = kept[case["columns"][name][0]].to_numpy(np.float32)
        label = kept[case["columns"][name][1]].to_numpy(np.float32)
        kind = case["kinds"][name] if case["mapped"] else (
            "binary" if np.isin(label, [0, 1]).all() else "graded")
        kinds[name] = kind
        bad = (label < 0).any() or (score < 0).any()
        if kind == "binary":
            bad |= (~np.isin(label, [0, 1])).any() or (score > 1).any()
        if bad:
            return fusion.InvalidValueError, kept, kinds
    return None, kept, kinds


def check_loaded(logs: fusion.LogSet, case, kept: pd.DataFrame, kinds: dict[str, str]) -> None:
    """Every kept row, grouped by request in source order, with its float32 values."""
    assert logs.objectives == tuple(case["names"])
    assert {o.name: o.kind for o in logs.schema.objectives} == kinds
    assert logs.n_rows == len(kept) and logs.n_requests == kept["request_id"].nunique()
    value_columns = [c for name in case["names"] for c in case["columns"][name]]
    for g, request_id in enumerate(logs.request_ids):
        rows = kept[kept["request_id"] == request_id]
        start, stop = logs.group_offsets[g], logs.group_offsets[g + 1]
        assert stop - start == len(rows), request_id
        want = rows[value_columns].to_numpy(np.float64).astype(np.float32)
        got = np.empty_like(want)
        got[:, 0::2], got[:, 1::2] = logs.scores[start:stop], logs.labels[start:stop]
        np.testing.assert_array_equal(got, want)
    assert list(logs.request_ids) == sorted(logs.request_ids)


def check_metrics_against_oracle(logs: fusion.LogSet, objective: str) -> None:
    """evaluate() of the formula that ranks by one objective's score equals the oracle."""
    weights = {o: float(o == objective) for o in logs.objectives}
    result = fusion.evaluate(logs, fusion.Formula.sum(weights), metrics=METRICS).to_frame()
    fused = logs.scores[:, logs.objective_index(objective)].astype(np.float64)
    offsets = logs.group_offsets.tolist()
    for j, spec in enumerate(logs.schema.objectives):
        for metric in METRICS:
            name, _, k = metric.partition("@")
            want, used = oracle.grouped(
                fused.tolist(), logs.labels[:, j].tolist(), offsets, metric=name,
                k=int(k or 0), threshold=spec.positive_threshold,
                log1p_gain=spec.gain == "log1p")
            row = result[(result["objective"] == spec.name) & (result["metric"] == metric)]
            assert int(row["groups_used"].iloc[0]) == used, (spec.name, metric)
            got = float(row["value"].iloc[0])
            if math.isnan(want):
                assert math.isnan(got), (spec.name, metric, got)
            else:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (spec.name, metric)


@FUZZ
@given(log_cases())
def test_fuzzed_logs_load_exactly_or_raise_a_specific_error(case):
    error, kept, kinds = expected_load(case)
    with tempfile.TemporaryDirectory() as directory:
        path = _write(case, Path(directory))
        schema = _schema(case) if case["mapped"] else None
        if error is not None:
            with pytest.raises(error):
                fusion.load_logs(path, schema=schema, nan_policy=case["nan_policy"])
            return
        logs = fusion.load_logs(path, schema=schema, nan_policy=case["nan_policy"])
    check_loaded(logs, case, kept, kinds)
    for objective in logs.objectives:
        check_metrics_against_oracle(logs, objective)


# --- sizes at the edges ------------------------------------------------------------------------
def test_one_row_requests_and_a_one_row_log(tmp_path):
    frame = pd.DataFrame({"request_id": [1, 2, 3], "user_id": [1, 1, 2], "item_id": [1, 2, 3],
                          "pred_click": [0.2, 0.9, 0.5], "label_click": [1, 0, 1]})
    frame.to_parquet(tmp_path / "a.parquet")
    logs = fusion.load_logs(tmp_path / "a.parquet")
    result = fusion.evaluate(logs, fusion.Formula.sum({"click": 1.0}), metrics=METRICS)
    assert math.isnan(result["click", "gauc"])           # no request has both classes
    assert result["click", f"ndcg@{K_NDCG}"] == 1.0      # one item is always ranked ideally
    assert result["click", f"top@{K_TOP}"] == pytest.approx(2 / 3)
    frame.iloc[:1].to_parquet(tmp_path / "b.parquet")
    assert fusion.load_logs(tmp_path / "b.parquet").n_rows == 1


@pytest.mark.slow
def test_a_100k_item_request_matches_the_oracle(tmp_path):
    n = 100_000
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "request_id": np.r_[np.zeros(n, dtype=np.int64), np.arange(1, 201)],
        "user_id": 0, "item_id": np.arange(n + 200),
        "pred_click": np.round(rng.random(n + 200), 3),       # ~100 items share each score
        "label_click": (rng.random(n + 200) < 0.1).astype(np.int64),
        "pred_dwell": rng.gamma(2.0, 5.0, n + 200).astype(np.float32),
        "label_dwell": np.where(rng.random(n + 200) < 0.3, rng.exponential(20.0, n + 200), 0.0),
    })
    frame.to_parquet(tmp_path / "big.parquet")
    logs = fusion.load_logs(tmp_path / "big.parquet")
    assert logs.request_sizes().max() == n
    for objective in logs.objectives:
        check_metrics_against_oracle(logs, objective)


def test_oracle_tie_blocks_agree_with_pairs():
    rng = np.random.default_rng(1)
    for _ in range(200):
        fused = np.round(rng.random(rng.integers(1, 40)), 1).tolist()
        positive = (rng.random(len(fused)) < 0.4).tolist()
        assert oracle.auc_pairs(fused, positive) == pytest.approx(
            oracle.auc_blocks(fused, positive)) or oracle.auc_pairs(fused, positive) is None


# --- damaged files -----------------------------------------------------------------------------
@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True), flip=st.integers(0, 255), where=st.floats(0, 1))
def test_truncated_or_corrupted_parquet_raises_a_source_error_or_loads_exactly(cut, flip, where):
    frame = pd.DataFrame({"request_id": [1, 1, 2, 2, 2], "user_id": 1, "item_id": range(5),
                          "pred_click": [0.1, 0.7, 0.3, 0.3, 0.9], "label_click": [0, 1, 1, 0, 0]})
    with tempfile.TemporaryDirectory() as directory:
        good, path = Path(directory) / "good.parquet", Path(directory) / "bad.parquet"
        frame.to_parquet(good)
        data = bytearray(good.read_bytes())
        truncated = bytes(data[:int(cut * len(data))])
        path.write_bytes(truncated)
        with pytest.raises(fusion.SourceError):
            fusion.load_logs(path)
        position = int(where * (len(data) - 1))
        data[position] ^= flip
        path.write_bytes(bytes(data))
        try:
            logs = fusion.load_logs(path)
        except fusion.FusionError:
            return
    # A flip that still decodes (e.g. in metadata) must not change a value silently.
    np.testing.assert_array_equal(logs.scores[:, 0], frame["pred_click"].to_numpy(np.float32))
    np.testing.assert_array_equal(logs.labels[:, 0], frame["label_click"].to_numpy(np.float32))


CSV_HEADER = "request_id,user_id,item_id,pred_click,label_click\n"
CSV_ROWS = ["1,1,1,0.1,0", "1,1,2,0.7,1", "2,2,3,0.3,1", "2,2,4,0.9,0"]


@FUZZ
@given(damage=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(
    ['"', '""', ',', ',,', '\n', '"\n', "'", ';', '\\', '\r'])), min_size=1, max_size=3),
    positions=st.lists(st.floats(0, 1), min_size=3, max_size=3))
def test_csv_with_broken_quoting_raises_or_loads_the_intended_values(damage, positions):
    rows = list(CSV_ROWS)
    for (row, text), where in zip(damage, positions):
        at = int(where * len(rows[row]))
        rows[row] = rows[row][:at] + text + rows[row][at:]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "broken.csv"
        path.write_text(CSV_HEADER + "\n".join(rows) + "\n")
        try:
            logs = fusion.load_logs(path)
        except fusion.FusionError:
            return
    # Whatever loads holds only values that are in the file, each row a real (score, label).
    intended = {(float(np.float32(r.split(",")[3])), float(r.split(",")[4])) for r in CSV_ROWS}
    pairs = set(zip(logs.scores[:, 0].tolist(), logs.labels[:, 0].tolist()))
    assert len(pairs - intended) <= len(damage), (rows, pairs)


# --- config files ------------------------------------------------------------------------------
def _valid_config() -> dict:
    return {
        "format": 1, "name": "fuzz", "created": "2026-11-08T10:00:00+00:00",
        "tool_version": "0.1.0",
        "formula": {"kind": "product", "objectives": {
            "click": {"score_column": "pred_click", "weight": 0.5, "alpha": 0.01},
            "dwell": {"score_column": "pred_dwell", "weight": 0.5, "alpha": 1.0}}},
        "objectives": {
            "click": {"score_column": "pred_click", "label_column": "label_click",
                      "kind": "binary", "positive_threshold": 0.0, "gain": "linear"},
            "dwell": {"score_column": "pred_dwell", "label_column": "label_dwell",
                      "kind": "graded", "positive_threshold": 0.0, "gain": "log1p"}},
        "metrics": [], "baseline": None, "evaluated_on": None, "sql": "",
    }


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(HOSTILE_NAMES),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)
PATHS = [("format",), ("name",), ("formula",), ("formula", "kind"), ("formula", "objectives"),
         ("formula", "objectives", "click"), ("formula", "objectives", "click", "weight"),
         ("formula", "objectives", "click", "alpha"),
         ("formula", "objectives", "click", "score_column"), ("objectives",),
         ("objectives", "click"), ("objectives", "click", "kind"),
         ("objectives", "click", "score_column"), ("objectives", "dwell", "positive_threshold"),
         ("metrics",), ("baseline",), ("evaluated_on",), ("sql",), ("created",),
         ("new field",)]


def _mutated(mutations) -> dict:
    config = _valid_config()
    for path, value in mutations:
        node = config
        for key in path[:-1]:
            if not isinstance(node, dict) or not isinstance(node.get(key), dict):
                break
            node = node[key]
        else:
            if value is _DELETE:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
    return config


_DELETE = object()


@FUZZ
@given(mutations=st.lists(st.tuples(st.sampled_from(PATHS), JSON_VALUES | st.just(_DELETE)),
                          min_size=1, max_size=3),
       suffix=st.sampled_from([".json", ".yaml", ".cfg"]))
def test_fuzzed_configs_load_valid_or_raise_config_error(mutations, suffix):
    config = _mutated(mutations)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"c{suffix}"
        text = (yaml.safe_dump(config, allow_unicode=True) if suffix == ".yaml"
                else json.dumps(config, allow_nan=True))
        path.write_text(text, encoding="utf-8")
        try:
            loaded = fusion.load_config(path)
        except fusion.ConfigError:
            return
        # What loads is valid and survives its own round trip unchanged.
        weights = list(loaded.formula.weights.values())
        assert all(math.isfinite(w) and w >= 0 for w in weights)
        assert all(math.isfinite(a) for a in loaded.formula.alphas.values())
        again = Path(directory) / "again.json"
        fusion.write_config(loaded, again)
        reloaded = fusion.load_config(again)
        assert reloaded.formula == loaded.formula and reloaded.name == loaded.name
        assert reloaded.objectives == loaded.objectives


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True), suffix=st.sampled_from([".json", ".yaml"]),
       garbage=st.binary(max_size=8))
def test_truncated_or_garbled_config_files_raise_config_error(cut, suffix, garbage):
    complete = fusion.FusionConfig.from_dict(_valid_config())
    text = complete.to_json() if suffix == ".json" else complete.to_yaml()
    data = text.encode()[:int(cut * len(text.encode()))] + garbage
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"c{suffix}"
        path.write_bytes(data)
        try:
            loaded = fusion.load_config(path)
        except fusion.ConfigError:
            return
    # Only a cut that keeps every required field can load, and then it is the same config.
    assert loaded.formula == complete.formula and loaded.objectives == complete.objectives

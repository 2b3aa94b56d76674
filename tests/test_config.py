"""Config export and import: exact round trips, contents, every validation error, atomic writes."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusion
from fusion.config import (
    FORMAT_VERSION,
    FusionConfig,
    export_config,
    load_config,
    stored_formula,
    write_text_atomic,
)
from fusion.errors import ConfigError
from fusion.evaluate import evaluate
from fusion.formulas import Formula

from .conftest import make_log_frame

OBJECTIVES = ("click", "dwell", "like")
METRICS = ["gauc", "ndcg@10", "top@10", "auc"]
# Weights summing to 1 with no small rational relation (ties come only from equal inputs).
W = {"click": 0.5, "dwell": 0.3090169943749474, "like": 0.1909830056250526}

FORMULAS = {
    "product": Formula.product(W, alphas={"click": 0.01, "dwell": 1.0, "like": 0.01}),
    "sum": Formula.sum(W, transforms={"click": "log", "dwell": "percentile", "like": "zscore"},
                       alphas={"click": 0.001}),
    "rank": Formula.rank(W, k=7.5),
}
BASELINE = Formula.product({o: 1 / 3 for o in OBJECTIVES}, alphas={o: 0.01 for o in OBJECTIVES})


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = make_log_frame(60, seed=11, objectives=OBJECTIVES)
    frame["label_like"] = 0  # no positive at all: every like gauc/auc is undefined (NaN)
    path = tmp_path_factory.mktemp("config") / "logs.parquet"
    frame.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def logs(log_path: Path) -> fusion.LogSet:
    return fusion.load_logs(log_path)


def _same_floats(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _assert_frames_identical(left, right) -> None:
    assert list(left["objective"]) == list(right["objective"])
    assert list(left["metric"]) == list(right["metric"])
    for column in ("value", "baseline", "delta"):
        for a, b in zip(left[column], right[column]):
            assert _same_floats(float(a), float(b)), (column, a, b)


# --- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
@pytest.mark.parametrize("kind", list(FORMULAS))
def test_round_trip_reproduces_the_exported_metrics_exactly(tmp_path, logs, kind, suffix):
    formula = FORMULAS[kind]
    result = evaluate(logs, formula, metrics=METRICS, baseline=BASELINE)
    path = tmp_path / f"config{suffix}"
    exported = export_config(formula, logs, path=path, name="feed", metrics=result,
                             baseline=BASELINE)

    loaded = load_config(path, logs)
    assert loaded.formula == formula
    assert loaded.baseline == BASELINE
    assert loaded.to_dict() == exported.to_dict()
    again = evaluate(logs, loaded.formula, metrics=loaded.metric_names(), baseline=loaded.baseline)
    _assert_frames_identical(again.to_frame(), loaded.metrics_frame())
    _assert_frames_identical(again.to_frame(), result.to_frame())
    # The fixture makes some values undefined: they travel as null and come back NaN.
    assert loaded.metrics_frame()["value"].isna().any()
    assert "NaN" not in path.read_text() and ".nan" not in path.read_text()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.lists(st.floats(min_value=1e-300, max_value=1e300), min_size=3, max_size=3),
    alphas=st.lists(st.floats(min_value=-1e-3, max_value=1e6, allow_subnormal=True),
                    min_size=3, max_size=3),
)
def test_any_float_survives_json_and_yaml_bit_for_bit(tmp_path, logs, raw, alphas):
    formula = Formula.product(dict(zip(OBJECTIVES, raw)), alphas=dict(zip(OBJECTIVES, alphas)))
    config = export_config(formula, schema=logs.schema)
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"c{suffix}"
        config_path = export_config(formula, schema=logs.schema, path=path)
        loaded = load_config(path)
        assert loaded.formula == config.formula == config_path.formula
        for name, weight in config.formula.weights.items():
            loaded_weight = loaded.formula.weights[name]
            assert np.float64(loaded_weight).tobytes() == np.float64(weight).tobytes()


# --- contents ----------------------------------------------------------------------------
def test_config_records_formula_objectives_metrics_logs_and_sql(tmp_path, log_path):
    logs = fusion.load_logs(log_path, where=[("surface", "in", ["feed", "search"])])
    formula = FORMULAS["product"]
    result = evaluate(logs, formula, metrics=["gauc", "ndcg@10"], baseline=BASELINE)
    config = export_config(formula, logs, path=tmp_path / "c.json", name="feed-nov",
                           metrics=result, baseline=BASELINE)
    data = json.loads((tmp_path / "c.json").read_text())

    assert data["format"] == FORMAT_VERSION == 1
    assert data["name"] == "feed-nov"
    assert data["tool_version"] == fusion.__version__
    created = dt.datetime.fromisoformat(data["created"])
    assert abs(dt.datetime.now(dt.timezone.utc) - created) < dt.timedelta(minutes=5)
    assert data["formula"]["kind"] == "product"
    assert data["formula"]["objectives"]["dwell"] == {
        "score_column": "pred_dwell", "weight": W["dwell"], "alpha": 1.0}
    assert data["objectives"]["dwell"] == {
        "score_column": "pred_dwell", "label_column": "label_dwell", "kind": "graded",
        "positive_threshold": 0.0, "gain": "log1p"}
    assert data["objectives"]["click"]["kind"] == "binary"
    assert data["baseline"]["objectives"]["click"]["weight"] == 1 / 3
    records = {(r["objective"], r["metric"]): r for r in data["metrics"]}
    assert set(records) == {(o, m) for o in OBJECTIVES for m in ("gauc", "ndcg@10")}
    click = records["click", "gauc"]
    assert click["value"] == result["click", "gauc"]
    assert click["delta"] == pytest.approx(click["value"] / click["baseline"] - 1)
    assert click["groups_used"] > 0 and click["ci_low"] is None
    on = data["evaluated_on"]
    assert on["sources"] == [str(log_path.resolve())]
    assert on["filters"] == [["surface", "in", ["feed", "search"]]]
    assert (on["rows"], on["requests"]) == (logs.n_rows, logs.n_requests)
    assert on["content_hash"] == logs.fingerprint["content_hash"]
    assert on["schema"]["objectives"]["dwell"]["kind"] == "graded"
    assert data["sql"] == formula.to_sql() == config.sql
    assert config.matches(logs)
    assert not config.matches(fusion.load_logs(log_path))


def test_config_schema_reloads_the_same_logs(tmp_path, logs, log_path):
    config = export_config(FORMULAS["rank"], logs)
    again = fusion.load_logs(log_path, schema=config.schema())
    assert again.fingerprint["content_hash"] == logs.fingerprint["content_hash"]
    assert export_config(FORMULAS["rank"], schema=logs.schema).schema() is None


def test_score_columns_come_from_the_schema(tmp_path, log_path):
    mapping = {"objectives": {"ctr": {"score": "pred_click", "label": "label_click"},
                              "watch": {"score": "pred_dwell", "label": "label_dwell",
                                        "kind": "graded", "positive_threshold": 10}}}
    logs = fusion.load_logs(log_path, schema=mapping)
    config = export_config(Formula.sum({"ctr": 0.25, "watch": 0.75}), logs)
    assert config.to_dict()["formula"]["objectives"]["ctr"]["score_column"] == "pred_click"
    assert "pred_click" in config.sql and "pred_ctr" not in config.sql
    assert config.objectives["watch"]["positive_threshold"] == 10.0


def test_sql_export_has_a_header_and_the_expression(tmp_path, logs):
    path = tmp_path / "fused.sql"
    config = export_config(FORMULAS["sum"], logs, path=path, name="feed-nov")
    text = path.read_text()
    header, body = text.split("\n")[:4], "\n".join(text.split("\n")[4:])
    assert header[0].startswith("-- Fusion Tuner config 'feed-nov' (format 1, tool "
                                f"{fusion.__version__}, created ")
    assert header[1] == "-- kind: sum"
    assert header[2] == f"-- weights: click=0.5, dwell={W['dwell']!r}, like={W['like']!r}"
    assert header[3].startswith("-- alphas: click=0.001")
    assert body.strip().startswith("-- transforms: click=log, dwell=percentile, like=zscore")
    assert body.strip().endswith(config.sql)
    with pytest.raises(ConfigError, match="SQL export"):
        load_config(path)


def test_weights_are_stored_normalised(logs):
    formula = Formula.rank({"click": 2.0, "dwell": 6.0})
    config = export_config(formula, logs)
    assert config.formula == formula.normalized()
    assert config.formula.weights == {"click": 0.25, "dwell": 0.75}
    on_simplex = formula.normalized()
    assert stored_formula(on_simplex) is on_simplex


# --- export errors ------------------------------------------------------------------------
def test_export_errors(tmp_path, logs):
    formula = FORMULAS["product"]
    result = evaluate(logs, formula, metrics=["gauc"])
    with pytest.raises(ConfigError, match="needs the logs .or a schema"):
        export_config(formula)
    with pytest.raises(ConfigError, match="only be exported with the logs"):
        export_config(formula, schema=logs.schema, metrics=result)
    unnormalised = Formula.product({"click": 2.0, "dwell": 1.0},
                                   alphas={"dwell": 1.0, "click": 0.1})
    with pytest.raises(ConfigError, match="weights sum to 3.0, not 1.*normalized"):
        export_config(unnormalised, logs, metrics=evaluate(logs, unnormalised, metrics=["gauc"]))
    with pytest.raises(ConfigError, match="cannot evaluate.*'conversion'"):
        export_config(Formula.sum({"click": 0.5, "conversion": 0.5}), logs)
    with pytest.raises(ConfigError, match="cannot evaluate.*alpha"):
        export_config(Formula.product({"click": 1.0}), logs)  # click has scores of 0
    with pytest.raises(ConfigError, match=r"unknown suffix '\.txt'"):
        export_config(formula, logs, path=tmp_path / "c.txt")
    with pytest.raises(ConfigError, match="cannot write config .*No such file"):
        export_config(formula, logs, path=tmp_path / "missing" / "c.json")


# --- load errors --------------------------------------------------------------------------
@pytest.fixture
def valid(logs) -> dict:
    return export_config(FORMULAS["product"], logs, baseline=BASELINE).to_dict()


def _write(tmp_path: Path, data, suffix: str = ".json") -> Path:
    path = tmp_path / f"config{suffix}"
    text = data if isinstance(data, str) else json.dumps(data)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ('{"format": 1,', ".json", r"is not valid JSON: .* at line 1 column"),
        ("format: [1\nname: x", ".yaml", r"is not valid YAML: .* at line"),
        ("{{{ :: [", ".cfg", "is neither JSON nor YAML"),
        ("[1, 2]", ".json", "expected a mapping of fields, got list"),
        ("", ".yaml", "expected a mapping of fields, got NoneType"),
    ],
)
def test_unparseable_configs(tmp_path, text, suffix, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text, suffix))


def _set(data: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    target = data
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format", 2, r"unknown format version 2 in field 'format'; .* reads format 1"),
        ("format", "1", r"unknown format version '1' in field 'format'"),
        ("format", True, r"unknown format version True"),
        ("format", _DELETE, r"field 'format' is missing \(e\.g\. format: 1\)"),
        ("formula.kind", "linear", r"field 'formula\.kind': unknown formula kind 'linear'; use "
                                   r"one of \['sum', 'product', 'rank'\]"),
        ("baseline.kind", None, r"field 'baseline\.kind': unknown formula kind None"),
        ("formula.objectives.dwell.weight", -0.25,
         r"field 'formula\.objectives\.<name>\.weight': 1 weight\(s\) are negative, NaN .* "
         r"e\.g\. dwell: -0\.25"),
        ("formula.objectives.dwell.weight", "0.3", r"1 weight\(s\) .* e\.g\. dwell: '0\.3'"),
        ("formula.objectives.dwell.weight", _DELETE,
         r"field 'formula\.objectives\.dwell\.weight' is missing"),
        ("objectives.like", _DELETE, r"1 weighted objective\(s\) of field 'formula' have no "
                                     r"definition under 'objectives', e\.g\. 'like' \(weight"),
        ("objectives.like.kind", "ordinal", r"field 'objectives\.like': .*kind 'ordinal'"),
        ("objectives.like.score_column", _DELETE,
         r"field 'objectives\.like' lacks \['score_column'\]"),
        ("formula.objectives.like.score_column", "pred_ctr",
         r"'formula\.objectives\.like\.score_column' is 'pred_ctr' but objective 'like' is "
         r"defined with score column 'pred_like'"),
        ("formula.objectives.like.transform", "log", r"unknown key\(s\) for kind 'product', e\.g\. "
                                                     r"'transform'"),
        ("formula.objectives.like.alpha", float("inf"),
         r"field 'formula\.objectives\.like\.alpha' must be a finite number, got inf"),
        ("formula.objectives", {}, r"field 'formula\.objectives' must map objective names"),
        ("weights", {"click": 1}, r"1 unknown field\(s\), e\.g\. 'weights'"),
        ("name", 3, r"field 'name' must be a string, got 3"),
        ("metrics", {"click": 0.7}, r"field 'metrics' must be a list of records"),
        ("metrics", [{"objective": "click", "metric": "gauc", "value": "high"}],
         r"field 'metrics\[0\]\.value' must be a number or null, got 'high'"),
        ("evaluated_on", "yesterday", r"field 'evaluated_on' must be a mapping"),
    ],
)
def test_invalid_fields_name_the_field_and_an_example(tmp_path, valid, field, value, message):
    path = _write(tmp_path, _set(valid, field, value))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize(("literal", "suffix"), [("NaN", ".json"), (".nan", ".yaml")])
def test_nan_weight_is_rejected(tmp_path, valid, literal, suffix):
    valid["formula"]["objectives"]["click"]["weight"] = "__NAN__"
    text = (json.dumps(valid) if suffix == ".json" else yaml.safe_dump(valid))
    path = _write(tmp_path, text.replace('"__NAN__"', literal).replace("__NAN__", literal), suffix)
    with pytest.raises(ConfigError, match=r"1 weight\(s\) are negative, NaN .* e\.g\. click: nan"):
        load_config(path)


def test_two_bad_weights_are_counted(tmp_path, valid):
    valid["formula"]["objectives"]["click"]["weight"] = -1
    valid["formula"]["objectives"]["like"]["weight"] = -2
    with pytest.raises(ConfigError, match=r"2 weight\(s\) are negative.*e\.g\. click: -1"):
        load_config(_write(tmp_path, valid))


def test_zero_weight_objective_needs_no_definition(tmp_path, valid, logs):
    valid["formula"]["objectives"]["like"]["weight"] = 0.0
    valid["baseline"] = None
    del valid["objectives"]["like"]
    config = load_config(_write(tmp_path, valid))
    assert config.formula.weights["like"] == 0.0
    assert "like" not in config.objectives


def test_score_column_absent_from_the_logs(tmp_path, valid, logs, log_path):
    valid["baseline"] = None
    valid["objectives"]["click"]["score_column"] = "pred_ctr"
    valid["formula"]["objectives"]["click"]["score_column"] = "pred_ctr"
    path = _write(tmp_path, valid)
    assert load_config(path).objectives["click"]["score_column"] == "pred_ctr"  # no logs: fine
    with pytest.raises(ConfigError, match=r"1 weighted objective\(s\) read a score column absent "
                                          r"from the logs, e\.g\. objective 'click' reads "
                                          r"'pred_ctr'; the logs' score columns: \["):
        load_config(path, logs)
    two = fusion.load_logs(log_path, schema={"objectives": {
        "click": {"score": "pred_click", "label": "label_click"}}})
    valid["objectives"]["click"]["score_column"] = "pred_click"
    valid["formula"]["objectives"]["click"]["score_column"] = "pred_click"
    with pytest.raises(ConfigError, match=r"2 weighted objective\(s\) .* e\.g\. objective 'dwell'"):
        load_config(_write(tmp_path, valid), two)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.json")
    (tmp_path / "bin.json").write_bytes(b"{\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"neither JSON nor YAML: not UTF-8 text \(byte 0xff at "
                                          r"position 1\)"):
        load_config(tmp_path / "bin.json")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(ConfigError, match="cannot read config .*Is a directory"):
        load_config(tmp_path / "folder.json")


def test_hand_edited_yaml_with_an_unquoted_time_loads(tmp_path, valid):
    text = yaml.safe_dump(valid).replace(f"'{valid['created']}'", "2026-11-08 10:12:03")
    assert "created: 2026-11-08 10:12:03\n" in text
    assert load_config(_write(tmp_path, text, ".yaml")).created == "2026-11-08T10:12:03"


def test_from_dict_validates_like_load_config(valid, logs):
    config = FusionConfig.from_dict(valid, logs=logs)
    assert config.formula == FORMULAS["product"]
    with pytest.raises(ConfigError, match="unknown format version 9"):
        FusionConfig.from_dict({**valid, "format": 9})


# --- atomic writes ------------------------------------------------------------------------
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, logs, monkeypatch):
    path = tmp_path / "config.json"
    export_config(FORMULAS["product"], logs, path=path, name="old")
    old = path.read_bytes()
    seen = []

    def fsync_after_partial_write(fd):
        # The new content is in the temporary file by now; the crash comes before the rename.
        temporaries = [p for p in tmp_path.iterdir() if p.name != "config.json"]
        seen.append((len(temporaries), temporaries[0].stat().st_size))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fusion.config.os.fsync", fsync_after_partial_write)
    with pytest.raises(ConfigError, match="cannot write config .*No space left on device"):
        export_config(FORMULAS["rank"], logs, path=path, name="new")
    assert seen and seen[0][0] == 1 and seen[0][1] > 0
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_interrupted_write_mid_text_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.yaml"
    write_text_atomic(path, "old: 1\n")
    real_fdopen = os.fdopen

    class Interrupted:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            self.handle.write(text[: len(text) // 2])
            self.handle.flush()
            raise KeyboardInterrupt

    monkeypatch.setattr("fusion.config.os.fdopen",
                        lambda *a, **k: Interrupted(real_fdopen(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(path, "new: 2\n" * 100)
    assert path.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.yaml"]


def test_successful_write_replaces_the_file_and_keeps_it_readable(tmp_path):
    path = tmp_path / "out.json"
    write_text_atomic(path, "1")
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
    path.chmod(0o640)
    write_text_atomic(path, "2")
    assert path.read_text() == "2"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


# --- evaluation settings --------------------------------------------------------------------
def test_bootstrap_intervals_and_user_groups_reproduce(tmp_path, logs):
    formula = FORMULAS["sum"]
    result = evaluate(logs, formula, metrics=["gauc", "top@5"], group_by="user",
                      baseline=BASELINE, ci=0.9, n_boot=20, seed=4)
    export_config(formula, logs, path=tmp_path / "c.yaml", metrics=result)
    loaded = load_config(tmp_path / "c.yaml", logs)
    assert loaded.evaluation == {"group_by": "user", "ci": 0.9, "n_boot": 20, "seed": 4}
    assert loaded.baseline == BASELINE  # taken from the metrics
    again = loaded.evaluate(logs).to_frame()
    exported = loaded.metrics_frame()
    assert exported["ci_low"].notna().any() and exported["delta_ci_high"].notna().any()
    for column in ("value", "baseline", "delta", "ci_low", "ci_high", "delta_ci_low",
                   "delta_ci_high", "groups_used", "groups_skipped"):
        for a, b in zip(again[column], exported[column]):
            assert _same_floats(float(a), float(b)), (column, a, b)
    by_request = loaded.evaluate(logs, group_by="request", ci=None)
    assert by_request.group_by == "request" and by_request.ci_low is None


def test_metrics_must_belong_to_the_exported_formula_and_baseline(logs):
    formula = FORMULAS["rank"]
    result = evaluate(logs, formula, metrics=["gauc"], baseline=BASELINE)
    with pytest.raises(ConfigError, match="computed for another formula"):
        export_config(FORMULAS["product"], logs, metrics=result)
    with pytest.raises(ConfigError, match="not the baseline the metrics were computed against"):
        export_config(formula, logs, metrics=result, baseline=FORMULAS["product"])
    plain = evaluate(logs, formula, metrics=["gauc"])
    with pytest.raises(ConfigError, match=r"computed against \(none\)"):
        export_config(formula, logs, metrics=plain, baseline=BASELINE)
    assert export_config(formula, logs, metrics=result, baseline=BASELINE).baseline == BASELINE


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ({"group_by": "session"}, r"'evaluation\.group_by' must be one of \['request', 'user'\], "
                                  r"got 'session'"),
        ({"ci": 1.5, "n_boot": 10, "seed": 0}, r"'evaluation\.ci' must be a level in \(0, 1\)"),
        ({"ci": 0.9, "n_boot": None, "seed": 0}, r"'evaluation\.n_boot' must be a whole number"),
        ({"bootstrap": True}, r"field 'evaluation' has 1 unknown key\(s\), e\.g\. 'bootstrap'"),
    ],
)
def test_invalid_evaluation_settings(tmp_path, valid, evaluation, message):
    valid["evaluation"] = evaluation
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, valid))

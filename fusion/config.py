"""Exporting a chosen fusion formula as a config for serving, and loading it back.

A config is a JSON or YAML document::

    format: 1                        # bumped on any incompatible change
    name: feed-2026-11
    created: "2026-11-08T10:12:03+00:00"
    tool_version: 0.1.0
    formula:
      kind: product                  # sum | product | rank
      objectives:                    # per objective: score column, weight, alpha / transform
        click: {score_column: pred_click, weight: 0.5, alpha: 0.001}
        dwell: {score_column: pred_dwell, weight: 0.5, alpha: 1.0}
      # k: 60.0                      # rank only
    objectives:                      # the objective definitions the metrics were computed with
      click: {score_column: pred_click, label_column: label_click, kind: binary,
              positive_threshold: 0.0, gain: linear}
    metrics:                         # when exported with metrics; NaN is written as null
      - {objective: click, metric: gauc, value: 0.71, baseline: 0.70, delta: 0.014,
         ci_low: null, ci_high: null, delta_ci_low: null, delta_ci_high: null,
         groups_used: 812, groups_skipped: 188}
    evaluation: {group_by: request, ci: null, n_boot: null, seed: null}   # how, for re-evaluation
    baseline: {kind: product, objectives: {...}}   # the formula the deltas compare against
    evaluated_on: {sources: [...], filters: [...], rows: ..., requests: ..., content_hash: ...,
                   schema: {...}}
    sql: "..."                       # the fused score as a SQL expression

Every float is written with ``repr`` precision (JSON and YAML both round-trip it exactly), so
evaluating the loaded formula on the same logs reproduces the exported metrics bit for bit.
A ``.sql`` export holds only the SQL expression under a comment header; it cannot be loaded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from .errors import ConfigError, FormulaError, SchemaError
from .evaluate import DEFAULT_METRICS, GROUP_BY, EvaluationResult, evaluate
from .formulas import Formula
from .schema import Objective, Schema

if TYPE_CHECKING:
    from .logs import LogSet

FORMAT_VERSION = 1
FORMULA_KINDS: tuple[str, ...] = ("sum", "product", "rank")
CONFIG_SUFFIXES: tuple[str, ...] = (".json", ".yaml", ".yml", ".sql")
METRIC_FIELDS: tuple[str, ...] = (
    "objective", "metric", "value", "baseline", "delta", "ci_low", "ci_high",
    "delta_ci_low", "delta_ci_high", "groups_used", "groups_skipped",
)
_FLOAT_METRIC_FIELDS = ("value", "baseline", "delta", "ci_low", "ci_high", "delta_ci_low",
                        "delta_ci_high")
_INT_METRIC_FIELDS = ("groups_used", "groups_skipped")
_TOP_FIELDS = ("format", "name", "created", "tool_version", "formula", "objectives", "metrics",
               "evaluation", "baseline", "evaluated_on", "sql")
NO_EVALUATION: dict[str, Any] = {"group_by": "request", "ci": None, "n_boot": None, "seed": None}
_SIMPLEX_TOLERANCE = 1e-12
_OBJECTIVE_FIELDS = ("score_column", "label_column", "kind", "positive_threshold", "gain")


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """A fusion formula with everything serving and auditing need to trust it.

    Attributes
    ----------
    format : int
        Config format version (:data:`FORMAT_VERSION`).
    name : str
    formula : Formula
        The fusion formula, weights normalised to sum to 1.
    objectives : dict of str -> dict
        Objective definitions (``score_column``, ``label_column``, ``kind``,
        ``positive_threshold``, ``gain``) of every objective of the logs, by name.
    metrics : tuple of dict
        One record per (objective, metric) with the fields :data:`METRIC_FIELDS`; NaN where a
        value is undefined (no usable group, no baseline, no confidence interval). Empty when
        exported without metrics.
    evaluation : dict
        How the metrics were computed: ``group_by`` and the bootstrap settings ``ci``,
        ``n_boot``, ``seed`` (None without intervals); :meth:`evaluate` repeats them.
    baseline : Formula or None
        The formula the metrics' deltas compare against.
    evaluated_on : dict or None
        The logs' fingerprint (sources, filters, sampling, rows, requests, content hash) and
        their schema; None when exported without logs.
    created : str
        ISO 8601 time of the export (UTC).
    tool_version : str
        ``fusion.__version__`` of the exporting tool.
    sql : str
        The fused score as a SQL expression over the score columns.
    """

    format: int
    name: str
    formula: Formula
    objectives: dict[str, dict[str, Any]]
    metrics: tuple[dict[str, Any], ...]
    evaluation: dict[str, Any]
    baseline: Formula | None
    evaluated_on: dict[str, Any] | None
    created: str
    tool_version: str
    sql: str

    # --- views ------------------------------------------------------------------------------
    def metric_names(self) -> list[str]:
        """The exported metric names (e.g. ``["gauc", "ndcg@10"]``), in first-seen order."""
        return list(dict.fromkeys(record["metric"] for record in self.metrics))

    def metrics_frame(self) -> pd.DataFrame:
        """The exported metrics as a tidy DataFrame with the columns :data:`METRIC_FIELDS`."""
        return pd.DataFrame(list(self.metrics), columns=list(METRIC_FIELDS))

    def evaluate(self, logs: LogSet, **overrides: Any) -> EvaluationResult:
        """Evaluate the formula on ``logs`` as it was evaluated for the export.

        Same metrics (the defaults when none were exported), baseline, ``group_by`` and
        bootstrap settings, so on the same logs the result equals :attr:`metrics` exactly.
        ``overrides`` replace any argument of :func:`fusion.evaluate`.
        """
        arguments: dict[str, Any] = {
            "metrics": self.metric_names() or list(DEFAULT_METRICS),
            "group_by": self.evaluation["group_by"],
            "baseline": self.baseline,
        }
        if self.evaluation["ci"] is not None:
            arguments.update(ci=self.evaluation["ci"], n_boot=self.evaluation["n_boot"],
                             seed=self.evaluation["seed"])
        arguments.update(overrides)
        return evaluate(logs, self.formula, **arguments)

    def schema(self) -> Schema | None:
        """The schema of the logs the config was evaluated on (None if not recorded)."""
        recorded = (self.evaluated_on or {}).get("schema")
        return None if recorded is None else Schema.from_dict(recorded)

    def check_fits(self, logs: LogSet) -> None:
        """Raise ConfigError unless the formula can be evaluated on ``logs``.

        Every weighted objective must exist in the logs with the config's score column, and
        the formula must be valid there (e.g. ``score + alpha > 0`` where a log is taken).
        """
        _check_fits_logs(self, logs, f"config {self.name!r}")

    def matches(self, logs: LogSet) -> bool:
        """Whether ``logs`` have the content hash of the logs the config was evaluated on."""
        recorded = (self.evaluated_on or {}).get("content_hash")
        return recorded is not None and recorded == logs.fingerprint.get("content_hash")

    # --- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-safe dict (NaN written as None) in the documented layout."""
        return {
            "format": self.format,
            "name": self.name,
            "created": self.created,
            "tool_version": self.tool_version,
            "formula": _formula_to_dict(self.formula, self.objectives),
            "objectives": {name: dict(spec) for name, spec in self.objectives.items()},
            "metrics": [
                {key: _jsonable_number(record.get(key)) for key in METRIC_FIELDS}
                for record in self.metrics
            ],
            "evaluation": dict(self.evaluation),
            "baseline": None if self.baseline is None
            else _formula_to_dict(self.baseline, self.objectives),
            "evaluated_on": self.evaluated_on,
            "sql": self.sql,
        }

    def to_json(self) -> str:
        # allow_nan=False: NaN is already None, anything else non-finite is a bug to surface.
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_ConfigDumper, sort_keys=False,
                         allow_unicode=True, width=100)

    def to_sql_script(self) -> str:
        """The SQL expression under a comment header naming the config, version and weights."""
        formula = self.formula
        header = [
            f"-- Fusion Tuner config {self.name!r} (format {self.format}, "
            f"tool {self.tool_version}, created {self.created})",
            f"-- kind: {formula.kind}" + (f", k={formula.k!r}" if formula.kind == "rank" else ""),
            "-- weights: " + ", ".join(f"{o}={w!r}" for o, w in formula.weights.items()),
        ]
        if formula.alphas:
            header.append("-- alphas: "
                          + ", ".join(f"{o}={a!r}" for o, a in formula.alphas.items()))
        if formula.transforms:
            header.append("-- transforms: "
                          + ", ".join(f"{o}={t}" for o, t in formula.transforms.items()))
        return "\n".join(header) + "\n" + self.sql.rstrip("\n") + "\n"

    @classmethod
    def from_dict(cls, mapping: Any, *, logs: LogSet | None = None,
                  source: str = "config") -> FusionConfig:
        """Validate a config mapping (as written by :meth:`to_dict`) and build the config.

        Raises
        ------
        ConfigError
            Unknown format version, unknown or missing fields, unknown formula kind, a
            negative or NaN weight, a weighted objective without a definition, a malformed
            metric record; with ``logs``: a weighted objective whose score column the logs
            lack, or a formula the logs cannot evaluate.
        """
        return _config_from_dict(mapping, logs=logs, source=source)


class _ConfigDumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings (the SQL) as readable literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ConfigDumper.add_representer(str, _represent_str)


# --- export --------------------------------------------------------------------------------
def export_config(
    formula: Formula,
    logs: LogSet | None = None,
    *,
    path: str | Path | None = None,
    name: str = "fusion",
    metrics: EvaluationResult | None = None,
    baseline: Formula | FusionConfig | None = None,
    schema: Schema | None = None,
) -> FusionConfig:
    """Build a config for ``formula`` and optionally write it (atomically) to ``path``.

    Parameters
    ----------
    formula : Formula
        Stored with weights summing to 1: as given if they already do (within 1e-12), else
        ``formula.normalized()`` (which orders every request the same way).
    logs : LogSet, optional
        The logs the formula was evaluated on: their schema gives the objective definitions
        and score columns, their fingerprint goes to ``evaluated_on``.
    path : path, optional
        ``.json``, ``.yaml``/``.yml`` (the full config) or ``.sql`` (the SQL expression
        under a comment header). Written to a temporary file in the same directory,
        fsynced, then renamed over ``path``: readers never see a half-written config.
    name : str
    metrics : EvaluationResult, optional
        Metrics computed on ``logs`` for ``formula``, whose weights must then already sum to
        1 (e.g. ``fusion.evaluate(logs, formula.normalized(), baseline=...)``); exported with
        their baseline deltas and confidence intervals when present.
    baseline : Formula or FusionConfig, optional
        The formula the deltas compare against, stored as given so the deltas reproduce.
    schema : Schema, optional
        Objective definitions when no ``logs`` are given.

    Returns
    -------
    FusionConfig

    Raises
    ------
    ConfigError
        No logs and no schema; metrics without logs, or for weights that do not sum to 1;
        a formula the logs cannot evaluate; an unknown suffix or an unwritable path.
    """
    if not isinstance(formula, Formula):
        raise ConfigError(f"export_config needs a Formula, got {type(formula).__name__}")
    if logs is not None:
        schema = logs.schema
        try:
            formula.validate_for(logs)
        except FormulaError as exc:
            raise ConfigError(
                f"cannot export a formula these logs cannot evaluate: {exc}") from None
    if schema is None:
        raise ConfigError("export_config needs the logs (or a schema) that define the objectives")
    _check_formula_objectives(formula, schema)
    if isinstance(baseline, FusionConfig):
        baseline = baseline.formula
    stored = stored_formula(formula)
    records: tuple[dict[str, Any], ...] = ()
    evaluation = dict(NO_EVALUATION)
    if metrics is not None:
        if logs is None:
            raise ConfigError("metrics can only be exported with the logs they were computed on")
        if stored is not formula:
            # Rescaling keeps every order mathematically but not bit for bit: metrics of the
            # given scaling might not reproduce exactly from the stored weights.
            raise ConfigError(
                f"the weights sum to {math.fsum(formula.weights.values())!r}, not 1: configs "
                "store normalised weights, so evaluate formula.normalized() and export that "
                "with its metrics"
            )
        baseline = _metrics_baseline(metrics, formula, baseline)
        records = _metric_records(metrics)
        evaluation = {"group_by": metrics.group_by, "ci": metrics.ci, "n_boot": metrics.n_boot,
                      "seed": metrics.seed}
    from . import __version__  # NOTE: lazily, fusion/__init__ imports this module first

    config = FusionConfig(
        format=FORMAT_VERSION,
        name=str(name),
        formula=stored,
        objectives={o.name: _objective_to_dict(o) for o in schema.objectives},
        metrics=records,
        evaluation=evaluation,
        baseline=baseline,
        evaluated_on=None if logs is None
        else {**_plain(logs.fingerprint), "schema": logs.schema.to_dict()},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        tool_version=__version__,
        sql=stored.to_sql(
            score_columns={o.name: o.score_column for o in schema.objectives},
            request_column=schema.request_column,
        ),
    )
    if path is not None:
        write_config(config, path)
    return config


def write_config(config: FusionConfig, path: str | Path) -> Path:
    """Write ``config`` atomically in the format given by the suffix of ``path``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = config.to_json()
    elif suffix in (".yaml", ".yml"):
        text = config.to_yaml()
    elif suffix == ".sql":
        text = config.to_sql_script()
    else:
        raise ConfigError(
            f"config path {str(path)!r}: unknown suffix {suffix!r}; use one of "
            f"{list(CONFIG_SUFFIXES)}"
        )
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise ConfigError(f"cannot write config {str(path)!r}: {exc.strerror or exc}") from None
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` so that readers see the old or the new file, never a mix.

    Writes a temporary file in the same directory (same file system, so the rename is
    atomic), fsyncs it, then ``os.replace``s it over ``path``. On any failure the temporary
    file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    # NOTE: mkstemp makes the file private (0600); a config is for sharing, so it gets the
    # mode of the file it replaces, or rw-r--r--.
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o644
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is; not every platform allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _objective_to_dict(objective: Objective) -> dict[str, Any]:
    spec = objective.to_dict()
    del spec["name"]
    return spec


def _check_formula_objectives(formula: Formula, schema: Schema) -> None:
    unknown = [o for o in formula.weights if o not in schema.objective_names]
    if unknown:
        raise ConfigError(
            f"{len(unknown)} formula objective(s) are not defined by the logs' schema, e.g. "
            f"{unknown[0]!r}; known objectives: {list(schema.objective_names)}"
        )


def stored_formula(formula: Formula) -> Formula:
    """The formula a config stores for ``formula``: weights summing to 1.

    ``formula`` itself when its weights already sum to 1 (within 1e-12), else
    ``formula.normalized()``. Evaluate this one when exporting metrics with it.
    """
    # NOTE: normalized() is not idempotent to the last bit, so a formula already on the
    # simplex (a search candidate, a normalised formula) is kept exactly as evaluated.
    if abs(math.fsum(formula.weights.values()) - 1.0) <= _SIMPLEX_TOLERANCE:
        return formula
    return formula.normalized()


def _metrics_baseline(result: EvaluationResult, formula: Formula,
                      baseline: Formula | None) -> Formula | None:
    """The baseline to store with ``result``: the one its deltas were computed against."""
    if result.formula != formula:
        raise ConfigError(
            "the metrics were computed for another formula than the one exported: weights "
            f"{dict(result.formula.weights)} vs {dict(formula.weights)}"
        )
    if baseline is not None and baseline != result.baseline_formula:
        used = result.baseline_formula
        raise ConfigError(
            "baseline= is not the baseline the metrics were computed against "
            f"({'none' if used is None else dict(used.weights)}); "
            "pass the same baseline to fusion.evaluate, or leave baseline= out"
        )
    return result.baseline_formula


def _metric_records(result: EvaluationResult) -> tuple[dict[str, Any], ...]:
    frame = result.to_frame()
    records = []
    for row in frame.to_dict("records"):
        record: dict[str, Any] = {"objective": str(row["objective"]), "metric": str(row["metric"])}
        for key in _FLOAT_METRIC_FIELDS:
            record[key] = _as_float(row.get(key))
        for key in _INT_METRIC_FIELDS:
            record[key] = None if row.get(key) is None else int(row[key])
        records.append(record)
    return tuple(records)


def _as_float(value: Any) -> float:
    if value is None or value is pd.NA:
        return math.nan
    return float(value)


def _jsonable_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plain(value: Any) -> Any:
    """Numpy scalars and tuples inside a fingerprint as plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _formula_to_dict(formula: Formula,
                     objectives: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    entries: dict[str, dict[str, Any]] = {}
    for name, weight in formula.weights.items():
        # Zero-weight objectives of a loaded config may lack a definition.
        entry: dict[str, Any] = {"score_column": objectives.get(name, {}).get("score_column"),
                                 "weight": float(weight)}
        if name in formula.alphas:
            entry["alpha"] = float(formula.alphas[name])
        if name in formula.transforms:
            entry["transform"] = formula.transforms[name]
        entries[name] = entry
    layout: dict[str, Any] = {"kind": formula.kind}
    if formula.kind == "rank":
        layout["k"] = float(formula.k)
    layout["objectives"] = entries
    return layout


# --- load ----------------------------------------------------------------------------------
def load_config(path: str | Path, logs: LogSet | None = None) -> FusionConfig:
    """Read and validate a JSON or YAML config written by :func:`export_config`.

    Parameters
    ----------
    path : path
        ``.json`` is parsed as JSON, ``.yaml``/``.yml`` as YAML, anything else as JSON or
        else YAML.
    logs : LogSet, optional
        Also check the config fits these logs: every weighted objective exists with the
        config's score column, and the formula can be evaluated on them.

    Returns
    -------
    FusionConfig
        ``cfg.evaluate(logs)`` (the formula evaluated with the exported metrics, baseline,
        grouping and bootstrap settings) reproduces ``cfg.metrics`` exactly on the same logs;
        with the default settings so does ``fusion.evaluate(logs, cfg.formula, ...)``.

    Raises
    ------
    ConfigError
        The file cannot be read or is neither JSON nor YAML, or any check of
        :meth:`FusionConfig.from_dict` fails. Messages name the field and one bad value.
    """
    path = Path(path)
    if path.suffix.lower() == ".sql":
        raise ConfigError(
            f"config {str(path)!r} is a SQL export, which holds only the expression; "
            "load the .json or .yaml export instead"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config {str(path)!r} is neither JSON nor YAML: not UTF-8 text (byte "
            f"{exc.object[exc.start]:#04x} at position {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror or exc}") from None
    return FusionConfig.from_dict(_parse(text, path), logs=logs, source=str(path))


def _parse(text: str, path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _parse_json(text, path)
    if suffix in (".yaml", ".yml"):
        return _parse_yaml(text, path)
    try:
        return _parse_json(text, path)
    except ConfigError:
        try:
            return _parse_yaml(text, path)
        except ConfigError:
            raise ConfigError(f"config {str(path)!r} is neither JSON nor YAML") from None


def _parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from None


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1} column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config {str(path)!r} is not valid YAML: {problem}{at}") from None


def _config_from_dict(raw: Any, *, logs: LogSet | None, source: str) -> FusionConfig:
    where = f"config {source!r}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
    version = raw.get("format")
    if "format" not in raw:
        raise ConfigError(f"{where}: field 'format' is missing (e.g. format: {FORMAT_VERSION})")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise ConfigError(
            f"{where}: unknown format version {version!r} in field 'format'; "
            f"this version of Fusion Tuner reads format {FORMAT_VERSION}"
        )
    unknown = [k for k in raw if k not in _TOP_FIELDS]
    if unknown:
        raise ConfigError(f"{where}: {len(unknown)} unknown field(s), e.g. {unknown[0]!r}; "
                          f"known fields: {list(_TOP_FIELDS)}")
    missing = [k for k in ("name", "formula", "objectives") if k not in raw]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {missing}")
    objectives = _objectives_from_dict(raw["objectives"], where)
    formula = _formula_from_dict(raw["formula"], objectives, where, field="formula")
    baseline = None
    if raw.get("baseline") is not None:
        baseline = _formula_from_dict(raw["baseline"], objectives, where, field="baseline")
    evaluated_on = raw.get("evaluated_on")
    if evaluated_on is not None and not isinstance(evaluated_on, Mapping):
        raise ConfigError(f"{where}: field 'evaluated_on' must be a mapping, got {evaluated_on!r}")
    config = FusionConfig(
        format=FORMAT_VERSION,
        name=_string(raw, "name", where),
        formula=formula,
        objectives=objectives,
        metrics=_metrics_from_list(raw.get("metrics") or [], where),
        evaluation=_evaluation_from_dict(raw.get("evaluation"), where),
        baseline=baseline,
        evaluated_on=None if evaluated_on is None else dict(evaluated_on),
        created=_string(raw, "created", where, default=""),
        tool_version=_string(raw, "tool_version", where, default=""),
        sql=_string(raw, "sql", where, default=""),
    )
    if logs is not None:
        _check_fits_logs(config, logs, where)
    return config


def _string(raw: Mapping, key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if isinstance(value, dt.date):  # an unquoted time in hand-edited YAML
        value = value.isoformat()
    if not isinstance(value, str):
        raise ConfigError(f"{where}: field {key!r} must be a string, got {value!r}")
    return value


def _objectives_from_dict(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(
            f"{where}: field 'objectives' must map each objective name to its definition, e.g. "
            "click: {score_column: pred_click, label_column: label_click, kind: binary}"
        )
    objectives = {}
    for name, spec in raw.items():
        field = f"objectives.{name}"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: field {field!r} must be a mapping, got {spec!r}")
        extra = [k for k in spec if k not in _OBJECTIVE_FIELDS]
        if extra:
            raise ConfigError(f"{where}: field {field!r} has {len(extra)} unknown key(s), "
                              f"e.g. {extra[0]!r}; known: {list(_OBJECTIVE_FIELDS)}")
        absent = [k for k in ("score_column", "label_column") if k not in spec]
        if absent:
            raise ConfigError(f"{where}: field {field!r} lacks {absent}")
        try:
            objective = Objective(name=str(name), **spec)
        except (SchemaError, TypeError) as exc:
            raise ConfigError(f"{where}: field {field!r}: {exc}") from None
        objectives[objective.name] = _objective_to_dict(objective)
    return objectives


def _formula_from_dict(raw: Any, objectives: Mapping[str, Mapping[str, Any]], where: str,
                       *, field: str) -> Formula:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: field {field!r} must be a mapping, got {raw!r}")
    kind = raw.get("kind")
    if kind not in FORMULA_KINDS:
        raise ConfigError(
            f"{where}: field '{field}.kind': unknown formula kind {kind!r}; "
            f"use one of {list(FORMULA_KINDS)}"
        )
    allowed = {"kind", "objectives"} | ({"k"} if kind == "rank" else set())
    extra = [k for k in raw if k not in allowed]
    if extra:
        raise ConfigError(f"{where}: field {field!r} has {len(extra)} unknown key(s) for kind "
                          f"{kind!r}, e.g. {extra[0]!r}; known: {sorted(allowed)}")
    entries = raw.get("objectives")
    if not isinstance(entries, Mapping) or not entries:
        raise ConfigError(f"{where}: field '{field}.objectives' must map objective names to "
                          "{score_column, weight, ...}, e.g. "
                          "click: {score_column: pred_click, weight: 0.5}")
    weights: dict[str, float] = {}
    alphas: dict[str, float] = {}
    transforms: dict[str, str] = {}
    bad_weights: list[tuple[str, Any]] = []
    keys = {"score_column", "weight"} | (
        {"alpha", "transform"} if kind == "sum" else {"alpha"} if kind == "product" else set())
    for name, entry in entries.items():
        name = str(name)
        entry_field = f"{field}.objectives.{name}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: field {entry_field!r} must be a mapping, got {entry!r}")
        extra = [k for k in entry if k not in keys]
        if extra:
            raise ConfigError(f"{where}: field {entry_field!r} has {len(extra)} unknown key(s) "
                              f"for kind {kind!r}, e.g. {extra[0]!r}; known: {sorted(keys)}")
        if "weight" not in entry:
            raise ConfigError(f"{where}: field '{entry_field}.weight' is missing "
                              f"(e.g. weight: 0.5)")
        weight = _number(entry["weight"])
        if weight is None or not weight >= 0 or math.isinf(weight):
            bad_weights.append((name, entry["weight"]))
        else:
            weights[name] = weight
        if "alpha" in entry:
            alpha = _number(entry["alpha"])
            if alpha is None or not math.isfinite(alpha):
                raise ConfigError(f"{where}: field '{entry_field}.alpha' must be a finite number, "
                                  f"got {entry['alpha']!r}")
            alphas[name] = alpha
        if "transform" in entry:
            transforms[name] = entry["transform"]
    if bad_weights:
        name, value = bad_weights[0]
        raise ConfigError(
            f"{where}: field '{field}.objectives.<name>.weight': {len(bad_weights)} weight(s) "
            f"are negative, NaN or not finite numbers, e.g. {name}: {value!r}"
        )
    weighted = [(name, w) for name, w in weights.items() if w > 0]
    undefined = [(name, w) for name, w in weighted if name not in objectives]
    if undefined:
        name, weight = undefined[0]
        raise ConfigError(
            f"{where}: {len(undefined)} weighted objective(s) of field {field!r} have no "
            f"definition under 'objectives', e.g. {name!r} (weight {weight!r}); defined: "
            f"{list(objectives)}"
        )
    for name, entry in entries.items():
        column = entry.get("score_column")
        if name in objectives and column is not None and column != objectives[name]["score_column"]:
            raise ConfigError(
                f"{where}: field '{field}.objectives.{name}.score_column' is {column!r} but "
                f"objective {name!r} is defined with score column "
                f"{objectives[name]['score_column']!r}"
            )
    k = raw.get("k") if kind == "rank" else None
    if k is not None and _number(k) is None:
        raise ConfigError(f"{where}: field '{field}.k' must be a number, got {k!r}")
    try:
        return Formula.of(kind, weights, alphas=alphas, transforms=transforms,
                          k=None if k is None else _number(k))
    except FormulaError as exc:
        raise ConfigError(f"{where}: field {field!r}: {exc}") from None


def _number(value: Any) -> float | None:
    # YAML/JSON give int or float; bools and strings are not numbers here.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _metrics_from_list(raw: Any, where: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: field 'metrics' must be a list of records, got {raw!r}")
    records = []
    for i, item in enumerate(raw):
        field = f"metrics[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: field {field!r} must be a mapping, got {item!r}")
        extra = [k for k in item if k not in METRIC_FIELDS]
        if extra:
            raise ConfigError(f"{where}: field {field!r} has {len(extra)} unknown key(s), "
                              f"e.g. {extra[0]!r}; known: {list(METRIC_FIELDS)}")
        record: dict[str, Any] = {}
        for key in ("objective", "metric"):
            if not isinstance(item.get(key), str):
                raise ConfigError(f"{where}: field '{field}.{key}' must be a string, "
                                  f"got {item.get(key)!r}")
            record[key] = item[key]
        for key in _FLOAT_METRIC_FIELDS:
            value = item.get(key)
            number = math.nan if value is None else _number(value)
            if number is None:
                raise ConfigError(f"{where}: field '{field}.{key}' must be a number or null, "
                                  f"got {value!r}")
            record[key] = number
        for key in _INT_METRIC_FIELDS:
            value = item.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{where}: field '{field}.{key}' must be a whole number, "
                                  f"got {value!r}")
            record[key] = value
        records.append(record)
    return tuple(records)


def _evaluation_from_dict(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return dict(NO_EVALUATION)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: field 'evaluation' must be a mapping, got {raw!r}")
    extra = [k for k in raw if k not in NO_EVALUATION]
    if extra:
        raise ConfigError(f"{where}: field 'evaluation' has {len(extra)} unknown key(s), e.g. "
                          f"{extra[0]!r}; known: {list(NO_EVALUATION)}")
    evaluation = {**NO_EVALUATION, **raw}
    if evaluation["group_by"] not in GROUP_BY:
        raise ConfigError(f"{where}: field 'evaluation.group_by' must be one of {list(GROUP_BY)}, "
                          f"got {evaluation['group_by']!r}")
    ci, n_boot, seed = evaluation["ci"], evaluation["n_boot"], evaluation["seed"]
    if ci is not None:
        level = _number(ci)
        if level is None or not 0 < level < 1:
            raise ConfigError(f"{where}: field 'evaluation.ci' must be a level in (0, 1) or null, "
                              f"got {ci!r}")
        for key, value in (("n_boot", n_boot), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}: field 'evaluation.{key}' must be a whole number "
                                  f"when 'ci' is set, got {value!r}")
    return evaluation


def _check_fits_logs(config: FusionConfig, logs: LogSet, where: str) -> None:
    columns = {o.name: o.score_column for o in logs.schema.objectives}
    absent = [
        (name, config.objectives[name]["score_column"])
        for name, weight in config.formula.weights.items()
        if weight > 0 and columns.get(name) != config.objectives[name]["score_column"]
    ]
    if absent:
        name, column = absent[0]
        raise ConfigError(
            f"{where}: {len(absent)} weighted objective(s) read a score column absent from the "
            f"logs, e.g. objective {name!r} reads {column!r}; the logs' score columns: "
            f"{sorted(columns.values())}"
        )
    try:
        config.formula.validate_for(logs)
    except FormulaError as exc:
        raise ConfigError(f"{where}: the formula does not fit these logs: {exc}") from None

"""Session state and caching for the dashboard.

What one browser session has chosen lives in ``st.session_state`` (the data source, the
applied filters, the formula being tuned, the baseline, the search result). What is
expensive and the same for everyone is cached across sessions, keyed by everything that
determines it:

- a :class:`fusion.LogSet` per (source files with their size and mtime, schema, filters,
  NaN policy) in ``st.cache_resource``: loaded once, read-only afterwards, so sessions
  can share it;
- metric tables per (logs fingerprint, formula, baseline) in ``st.cache_data``: each
  session gets its own copy.

Uploads are written to a private temporary directory of the session under a name made
from their content hash, never under the name the browser sent.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

import fusion
from fusion import explore
from fusion.evaluate import EvaluationResult
from fusion.formulas import Formula, default_alphas
from fusion.logs import resolve_sources

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_LOGS = REPO_ROOT / "sample_logs" / "feed_sample.parquet"
STUDY_DIR = Path.home() / ".fusion-tuner" / "studies"
MAX_UPLOAD_MB = 200
UPLOAD_TYPES = ("parquet", "csv", "tsv", "json", "jsonl", "ndjson")
METRICS = ("gauc", "ndcg@10", "top@10")
DEFAULT_KIND = "product"
MAX_SLICE_VALUES = 50  # slice columns with more distinct values get no filter widget
# Larger logs are explored, tuned and searched on a seeded sample of whole requests holding
# about this many rows (a slider move stays live); Data and Export use every row. The
# default of the dashboard option --interactive-rows.
INTERACTIVE_ROWS = 1_000_000

# Session-state keys shared by several pages.
DATA = "data_choice"
WHERE = "applied_where"
FORMULA = "formula"
BASELINE = "baseline"
SEARCH = "search_result"
SELECTED = "selected_candidate"
TUNE_PREFIX = "tune:"
FILTER_PREFIX = "filter:"


@dataclasses.dataclass(frozen=True)
class DataChoice:
    """Where this session's logs come from and how they are read."""

    source: str
    label: str
    schema: fusion.Schema | None = None
    nan_policy: str = "raise"

    def schema_json(self) -> str | None:
        return None if self.schema is None else json.dumps(self.schema.to_dict(), sort_keys=True)


def sample_choice() -> DataChoice:
    return DataChoice(source=str(SAMPLE_LOGS), label="bundled sample")


def launch_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """What ``streamlit run app/streamlit_app.py -- [--logs PATH] [--interactive-rows N]``
    asked for (FusionError for a malformed value; other arguments are left alone)."""
    parser = argparse.ArgumentParser(prog="streamlit run app/streamlit_app.py --",
                                     add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--logs")
    parser.add_argument("--interactive-rows", type=int, default=INTERACTIVE_ROWS)
    try:
        options, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    except argparse.ArgumentError as exc:
        raise fusion.FusionError(f"dashboard option {exc}") from None
    if options.interactive_rows < 0:
        raise fusion.FusionError(f"dashboard option --interactive-rows: must be >= 0 (0: never "
                                 f"sample), got {options.interactive_rows}")
    return options


def launch_choice(argv: Sequence[str] | None = None) -> DataChoice:
    """The logs a session starts with: ``--logs PATH``, else the bundled sample."""
    path = launch_options(argv).logs
    return sample_choice() if not path else DataChoice(source=path, label=path)


def data_choice() -> DataChoice:
    return st.session_state.setdefault(DATA, launch_choice())


# --- loading ----------------------------------------------------------------------------
def _source_stamp(source: str) -> tuple[tuple[str, int, int], ...]:
    # Part of the cache key: a file rewritten in place must be read again.
    stamps = []
    for path in resolve_sources(source):
        stat = path.stat()
        stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


@st.cache_resource(max_entries=8, show_spinner="Loading logs…")
def _load_cached(source: str, stamp: tuple, schema_json: str | None, where_json: str,
                 nan_policy: str) -> fusion.LogSet:
    schema = None if schema_json is None else fusion.Schema.from_dict(json.loads(schema_json))
    where = [tuple(condition) for condition in json.loads(where_json)] or None
    return fusion.load_logs(source, schema=schema, where=where, nan_policy=nan_policy)


def load(choice: DataChoice, where: Sequence[tuple[str, str, Any]] = ()) -> fusion.LogSet:
    """The logs of ``choice`` with the filters ``where`` (cached; raises FusionError)."""
    return _load_cached(choice.source, _source_stamp(choice.source), choice.schema_json(),
                        json.dumps([list(c) for c in where]), choice.nan_policy)


def base_logs() -> fusion.LogSet:
    """This session's logs without filters (raises FusionError)."""
    return load(data_choice())


def applied_where() -> list[tuple[str, str, Any]]:
    return list(st.session_state.get(WHERE, []))


def current_logs() -> fusion.LogSet:
    """This session's logs with its applied filters (raises FusionError)."""
    return load(data_choice(), applied_where())


def require_logs() -> fusion.LogSet:
    """:func:`current_logs`, or show why there are none and stop the page."""
    try:
        return current_logs()
    except fusion.FusionError as exc:
        st.error(f"The logs cannot be loaded: {exc}. Choose another source on the Data page.")
        st.stop()


def interactive_logs(logs: fusion.LogSet) -> fusion.LogSet:
    """``logs`` itself up to ``--interactive-rows`` rows (default :data:`INTERACTIVE_ROWS`;
    0: always), else a seeded sample of whole requests with about that many rows (cached,
    shared by the sessions)."""
    limit = launch_options().interactive_rows
    if limit == 0 or logs.n_rows <= limit:
        return logs
    return request_sample(logs, max(1, logs.n_requests * limit // logs.n_rows))


def require_interactive_logs() -> fusion.LogSet:
    """:func:`interactive_logs` of :func:`require_logs`, with a caption when it is a sample."""
    logs = require_logs()
    used = interactive_logs(logs)
    if used is not logs:
        st.caption(f"Interactive on a sample of whole requests: {used.n_requests:,} of "
                   f"{logs.n_requests:,} requests ({used.n_rows:,} of {logs.n_rows:,} rows, "
                   "seed 0). The Data and Export pages use every row.")
    return used


def choose_data(choice: DataChoice) -> fusion.LogSet:
    """Load ``choice`` and make it this session's source; on error nothing changes."""
    logs = load(choice)
    st.session_state[DATA] = choice
    st.session_state[WHERE] = []
    for key in [k for k in st.session_state if str(k).startswith(FILTER_PREFIX)]:
        del st.session_state[key]
    # Results and formulas refer to the old logs' objectives and rows.
    for key in (SEARCH, SELECTED, BASELINE, FORMULA):
        st.session_state.pop(key, None)
    clear_tune_widgets()
    return logs


def save_upload(name: str, content: bytes, *, kind: str = "logs",
                allowed: Sequence[str] = UPLOAD_TYPES) -> Path:
    """Write an uploaded file to this session's private directory; return its path.

    The file is named from its content hash plus the suffix of ``name`` if that suffix is
    ``allowed`` (the readers pick their format by suffix); nothing else of ``name`` reaches
    the file system. One file per ``kind`` is kept: a new upload replaces the previous one.
    Raises ``fusion.SourceError`` for another suffix or a file over :data:`MAX_UPLOAD_MB`.
    """
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in allowed:
        raise fusion.SourceError(
            f"upload {name!r}: unknown format {('.' + suffix) if suffix else '(no suffix)'!r}; "
            f"use one of {['.' + t for t in allowed]}"
        )
    if len(content) > MAX_UPLOAD_MB * 2**20:
        raise fusion.SourceError(
            f"upload {name!r}: {len(content) / 2**20:.0f} MB is over the {MAX_UPLOAD_MB} MB limit"
        )
    directory = Path(st.session_state.setdefault("_upload_dir",
                                                 tempfile.mkdtemp(prefix="fusion-upload-")))
    for old in directory.glob(f"{kind}-*"):
        old.unlink()
    path = directory / f"{kind}-{hashlib.sha256(content).hexdigest()[:16]}.{suffix}"
    path.write_bytes(content)
    return path


def study_path(name: str) -> Path:
    """Where a study called ``name`` is saved: :data:`STUDY_DIR`, under a sanitised name.

    Only letters, digits, ``-``, ``_`` and ``.`` are kept, so a name cannot leave the
    directory. Raises ``fusion.StudyError`` for a name with nothing left.
    """
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip(".-")
    if not stem:
        raise fusion.StudyError(f"study name {name!r}: use letters, digits, '-', '_' or '.'")
    STUDY_DIR.mkdir(parents=True, exist_ok=True)
    return STUDY_DIR / f"{stem.removesuffix('.duckdb')}.duckdb"


def saved_studies() -> list[Path]:
    """The studies saved under :data:`STUDY_DIR`, newest first."""
    if not STUDY_DIR.is_dir():
        return []
    return sorted(STUDY_DIR.glob("*.duckdb"), key=lambda p: p.stat().st_mtime, reverse=True)


def source_columns(source: str) -> list[str]:
    """Column names of a source, for the column-mapping form (raises FusionError)."""
    return list(fusion.describe_source(source))


# --- filters ----------------------------------------------------------------------------
def filterable_slices(logs: fusion.LogSet) -> dict[str, list[Any]]:
    """Slice columns with few enough values for a multiselect, with their values."""
    return {name: list(values.categories) for name, values in logs.slices.items()
            if 1 < len(values.categories) <= MAX_SLICE_VALUES}


def build_where(selected: Mapping[str, Sequence[Any]], ts_column: str | None,
                dates: tuple[dt.date, dt.date] | None,
                full_range: tuple[dt.date, dt.date] | None) -> list[tuple[str, str, Any]]:
    """Structured ``load_logs`` filters from the filter widgets' values.

    An empty selection means "every value" and adds no filter; a date range equal to the
    logs' full range adds none either. The range is whole days: from the first day's
    midnight up to (excluding) the midnight after the last day.
    """
    where: list[tuple[str, str, Any]] = [
        (column, "in", [_plain(v) for v in values]) for column, values in selected.items() if values
    ]
    if ts_column is not None and dates is not None and len(dates) == 2 and dates != full_range:
        start, end = dates
        where.append((ts_column, ">=", f"{start.isoformat()} 00:00:00"))
        where.append((ts_column, "<", f"{(end + dt.timedelta(days=1)).isoformat()} 00:00:00"))
    return where


def _plain(value: Any) -> Any:
    # numpy scalars from categories -> JSON-able Python values (the filters are a cache key).
    return value.item() if isinstance(value, np.generic) else value


def date_range(logs: fusion.LogSet) -> tuple[dt.date, dt.date] | None:
    summary = logs.summary()
    if summary["first_ts"] is None:
        return None
    return summary["first_ts"].date(), summary["last_ts"].date()


# --- formulas ---------------------------------------------------------------------------
def default_formula(logs: fusion.LogSet, kind: str = DEFAULT_KIND) -> Formula:
    """Equal weights of ``kind`` over the logs' objectives (the default baseline)."""
    weights = {o: 1.0 / len(logs.objectives) for o in logs.objectives}
    return Formula.of(kind, weights, alphas=default_alphas(logs, kind) or None)


def current_formula(logs: fusion.LogSet) -> Formula:
    formula = st.session_state.get(FORMULA)
    if formula is None or set(formula.weights) - set(logs.objectives):
        formula = default_formula(logs)
        st.session_state[FORMULA] = formula
    return formula


def set_formula(formula: Formula) -> None:
    """Make ``formula`` the one being tuned (the Tune widgets are reset to show it)."""
    st.session_state[FORMULA] = formula
    clear_tune_widgets()


def clear_tune_widgets() -> None:
    for key in [k for k in st.session_state if str(k).startswith(TUNE_PREFIX)]:
        del st.session_state[key]


def baseline(logs: fusion.LogSet, kind: str) -> tuple[Formula, str]:
    """The baseline formula and where it comes from: a loaded config, else equal weights."""
    loaded = st.session_state.get(BASELINE)
    if loaded is not None:
        return loaded
    return default_formula(logs, kind), f"equal weights ({kind})"


def formula_to_query(formula: Formula) -> dict[str, str]:
    """Query parameters that reproduce ``formula``.

    ``kind``; per objective ``w.<o>`` (weight), ``a.<o>`` (alpha), ``t.<o>`` (a transform
    other than identity); ``k`` for rank. Numbers are written with ``repr`` precision.
    """
    params = {"kind": formula.kind}
    params.update({f"w.{o}": _short(w) for o, w in formula.weights.items()})
    params.update({f"a.{o}": _short(a) for o, a in formula.alphas.items()})
    params.update({f"t.{o}": t for o, t in formula.transforms.items() if t != "identity"})
    if formula.k is not None:
        params["k"] = _short(formula.k)
    return params


def formula_from_query(params: Mapping[str, str]) -> Formula | None:
    """The formula :func:`formula_to_query` wrote; None without ``kind``.

    Raises FormulaError for a value that is not a number or a formula that is not valid.
    """
    if "kind" not in params:
        return None
    numbers: dict[str, dict[str, float]] = {"w.": {}, "a.": {}, "k": {}}
    transforms = {}
    for key, text in params.items():
        prefix = "k" if key == "k" else key[:2]
        if prefix == "t.":
            transforms[key[2:]] = text
        elif prefix in numbers:
            try:
                numbers[prefix][key[2:]] = float(text)
            except ValueError:
                raise fusion.FormulaError(
                    f"URL parameter {key!r}: {text!r} is not a number") from None
    return Formula.of(params["kind"], numbers["w."], alphas=numbers["a."] or None,
                      transforms=transforms or None, k=numbers["k"].get(""))


def _short(value: float) -> str:
    return repr(float(value))


# --- cached results ---------------------------------------------------------------------
def logs_key(logs: fusion.LogSet) -> str:
    """A cache key that identifies the logs' content and the filters they were loaded with."""
    return json.dumps(logs.fingerprint, sort_keys=True, default=str)


@st.cache_data(max_entries=512, show_spinner=False)
def _evaluate_cached(key: str, formula_json: str, metrics: tuple[str, ...],
                     _logs: fusion.LogSet) -> EvaluationResult:
    formula = Formula.from_dict(json.loads(formula_json))
    return fusion.evaluate(_logs, formula, metrics=list(metrics))


def evaluate(logs: fusion.LogSet, formula: Formula, baseline_formula: Formula | None = None,
             metrics: Sequence[str] = METRICS) -> EvaluationResult:
    """``fusion.evaluate(logs, formula, metrics, baseline=baseline_formula)``, cached.

    Each formula is evaluated once per logs and cached on its own, so moving a weight
    evaluates only the new formula and reuses the baseline's metrics. The result is the one
    ``fusion.evaluate`` returns with that baseline: same values, same relative deltas.
    """
    def alone(each: Formula) -> EvaluationResult:
        return _evaluate_cached(logs_key(logs), json.dumps(each.to_dict(), sort_keys=True),
                                tuple(metrics), logs)

    result = alone(formula)
    if baseline_formula is None:
        return result
    return dataclasses.replace(result, baseline_formula=baseline_formula,
                               baseline_values=alone(baseline_formula).values)


@st.cache_resource(max_entries=8, show_spinner=False)
def _request_sample_cached(key: str, n: int, _logs: fusion.LogSet) -> fusion.LogSet:
    return _logs.sample_requests(n, seed=0)


def request_sample(logs: fusion.LogSet, n: int = 2000) -> fusion.LogSet:
    """At most ``n`` whole requests of ``logs`` (seeded), for pictures of per-row values."""
    return _request_sample_cached(logs_key(logs), n, logs)


@st.cache_data(max_entries=128, show_spinner="Computing statistics of the logs…")
def _statistic_cached(key: str, name: str, args: tuple, _logs: fusion.LogSet) -> Any:
    return getattr(explore, name)(_logs, *args)


def statistic(logs: fusion.LogSet, name: str, *args: Any) -> Any:
    """``fusion.explore.<name>(logs, *args)``, cached per logs (e.g. ``"single_score_gauc"``)."""
    return _statistic_cached(logs_key(logs), name, args, logs)

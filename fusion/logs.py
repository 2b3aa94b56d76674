"""Loading prediction logs through embedded DuckDB into a columnar :class:`LogSet`.

Security: each load opens its own in-memory DuckDB connection that may read only the
resolved source files (``allowed_paths``), then turns external access off and locks the
configuration before any user-influenced query runs. Filter values are bound parameters
and filter columns are checked against the source's columns, so hostile filter text can
neither read nor write another file.
"""

from __future__ import annotations

import dataclasses
import functools
import glob as globlib
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import (
    ColumnTypeError,
    EmptyLogsError,
    FilterError,
    FusionError,
    InvalidValueError,
    NoObjectivesError,
    SchemaError,
    SourceError,
)
from .schema import (
    LABEL_PREFIX,
    SCORE_PREFIX,
    Objective,
    Schema,
    check_columns_exist,
    detect_objective_names,
)

NanPolicy = Literal["raise", "drop"]
Filter = tuple[str, str, Any]

FILTER_OPS: dict[str, str] = {
    "==": "=",
    "!=": "<>",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}
LIST_FILTER_OPS = ("in", "not_in", "between")
_READERS = {".parquet": "read_parquet", ".csv": "read_csv", ".json": "read_json", ".jsonl": "read_json",
            ".ndjson": "read_json", ".tsv": "read_csv"}
_NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                  "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "BOOLEAN")
_CSV_TYPES = "['BOOLEAN', 'BIGINT', 'DOUBLE', 'TIMESTAMP', 'VARCHAR']"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_BATCH_ROWS = 1 << 17  # larger batches raise DuckDB's peak memory, not speed
_SLICE_TYPES = ("VARCHAR", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
                "UINTEGER", "UBIGINT", "BOOLEAN", "ENUM")


@dataclasses.dataclass(frozen=True, eq=False)
class LogSet:
    """Prediction logs in memory, rows ordered by request.

    Attributes
    ----------
    schema : Schema
        Which objectives the matrices hold (column ``j`` is ``schema.objectives[j]``).
    group_offsets : ndarray of int64, shape (requests + 1,)
        Rows of request ``g`` are ``group_offsets[g]:group_offsets[g + 1]``.
    scores, labels : ndarray of float32, shape (rows, objectives), C-contiguous
    request_ids : ndarray, shape (requests,)
        The id of each request, in row order.
    columns : dict of str -> pyarrow.ChunkedArray, length rows each
        Per-row ids and slices as read: ``"user"``, ``"item"`` and one entry per slice
        column. Use :attr:`users`, :attr:`items` and :attr:`slices` for dense codes.
    slice_names : tuple of str
        The slice dimensions (e.g. ``surface``), keys of :attr:`slices`.
    ts : ndarray of datetime64 or None
    fingerprint : dict
        What the logs were loaded from (sources, filters, sampling, row and request counts,
        a content hash): stored in configs and studies to recognise the same logs.
    excluded : dict of str -> int
        Rows dropped on load, by reason (only with ``nan_policy="drop"``).

    Notes
    -----
    Encoding ids and slices into dense codes hashes every row, which would cost as much as
    the load itself; it happens on first use of :attr:`users`, :attr:`items` or
    :attr:`slices` and is cached.
    """

    schema: Schema
    group_offsets: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    request_ids: np.ndarray
    columns: dict[str, pa.ChunkedArray]
    slice_names: tuple[str, ...]
    ts: np.ndarray | None
    fingerprint: dict[str, Any]
    excluded: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.schema.objective_names

    @property
    def n_rows(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_requests(self) -> int:
        return int(self.group_offsets.shape[0] - 1)

    @functools.cached_property
    def users(self) -> pd.Categorical:
        """Per-row user ids; ``.codes`` are dense int32 group codes."""
        return _categorical(self.columns["user"])

    @functools.cached_property
    def items(self) -> pd.Categorical:
        return _categorical(self.columns["item"])

    @functools.cached_property
    def slices(self) -> dict[str, pd.Categorical]:
        """Per-row slice dimensions by name, e.g. ``logs.slices["surface"]``."""
        return {name: _categorical(self.columns[name]) for name in self.slice_names}

    @property
    def n_users(self) -> int:
        return int(len(self.users.categories))

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-row arrays (scores, labels, ids, slices, ts)."""
        total = self.scores.nbytes + self.labels.nbytes + self.group_offsets.nbytes
        total += sum(column.nbytes for column in self.columns.values())
        return total + (0 if self.ts is None else self.ts.nbytes)

    def objective_index(self, name: str) -> int:
        try:
            return self.objectives.index(name)
        except ValueError:
            raise SchemaError(
                f"unknown objective {name!r}; these logs have {list(self.objectives)}"
            ) from None

    def request_id(self, index: int) -> Any:
        """The id of request number ``index`` as a plain Python value (for messages)."""
        value = self.request_ids[index]
        return value.item() if isinstance(value, np.generic) else value

    def request_sizes(self) -> np.ndarray:
        return np.diff(self.group_offsets)

    def take_requests(self, request_indices: np.ndarray) -> LogSet:
        """A new LogSet with only the given requests (whole requests, in the given order)."""
        request_indices = np.asarray(request_indices, dtype=np.int64)
        starts = self.group_offsets[request_indices]
        sizes = self.group_offsets[request_indices + 1] - starts
        offsets = np.zeros(len(request_indices) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        rows = np.repeat(starts - offsets[:-1], sizes) + np.arange(offsets[-1], dtype=np.int64)
        scores = np.ascontiguousarray(self.scores[rows])
        labels = np.ascontiguousarray(self.labels[rows])
        fingerprint = dict(self.fingerprint)
        fingerprint.update(rows=int(offsets[-1]), requests=int(len(request_indices)))
        fingerprint["content_hash"] = _content_hash(fingerprint, scores, labels, offsets)
        row_indices = pa.array(rows)
        return LogSet(
            schema=self.schema,
            group_offsets=offsets,
            scores=scores,
            labels=labels,
            request_ids=self.request_ids[request_indices],
            columns={name: column.take(row_indices) for name, column in self.columns.items()},
            slice_names=self.slice_names,
            ts=None if self.ts is None else self.ts[rows],
            fingerprint=fingerprint,
            excluded=dict(self.excluded),
        )

    def sample_requests(self, n: int, *, seed: int = 0) -> LogSet:
        """Keep ``n`` whole requests chosen at random (reproducible by ``seed``)."""
        n = _check_sample_size(n)
        if n >= self.n_requests:
            return self
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(self.n_requests, size=n, replace=False))
        sampled = self.take_requests(chosen)
        sampled.fingerprint["sample_requests"] = {"n": n, "seed": seed, "from": self.fingerprint.get("content_hash")}
        return sampled

    def summary(self) -> dict[str, Any]:
        """Plain figures about the logs: rows, requests, users, date range, base rates."""
        positives = self.labels > np.array([o.positive_threshold for o in self.schema.objectives],
                                           dtype=np.float32)
        summary: dict[str, Any] = {
            "rows": self.n_rows,
            "requests": self.n_requests,
            "users": self.n_users,
            "items": int(len(self.items.categories)),
            "objectives": list(self.objectives),
            "base_rate": {o: float(positives[:, j].mean()) for j, o in enumerate(self.objectives)},
            "label_mean": {o: float(self.labels[:, j].mean(dtype=np.float64))
                           for j, o in enumerate(self.objectives)},
            "first_ts": None,
            "last_ts": None,
            "excluded": dict(self.excluded),
        }
        if self.ts is not None and len(self.ts):
            summary["first_ts"] = pd.Timestamp(self.ts.min())
            summary["last_ts"] = pd.Timestamp(self.ts.max())
        return summary


def _check_sample_size(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise FusionError(f"sample_requests must be a whole number of requests >= 1, got {n!r}")
    return int(n)


# --- sources -------------------------------------------------------------------------------
def resolve_sources(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Expand a path, glob or list of them into existing files of one readable format."""
    items = [source] if isinstance(source, (str, Path)) else list(source)
    if not items:
        raise SourceError("no log source given")
    files: list[Path] = []
    for item in items:
        text = str(item)
        if any(ch in text for ch in "*?["):
            matches = sorted(globlib.glob(text, recursive=True))
            if not matches:
                raise SourceError(f"the glob {text!r} matches no file")
            files += [Path(m) for m in matches]
        else:
            files.append(Path(text))
    for path in files:
        if not path.exists():
            raise SourceError(f"log source {str(path)!r} does not exist")
        if not path.is_file():
            raise SourceError(f"log source {str(path)!r} is not a file")
    suffixes = {_reader_for(path) for path in files}
    if len(suffixes) > 1:
        raise SourceError(f"log sources mix formats: {sorted(p.suffix for p in files)}; use one format")
    return [path.resolve() for path in files]


def _reader_for(path: Path) -> str:
    try:
        return _READERS[path.suffix.lower()]
    except KeyError:
        raise SourceError(
            f"log source {str(path)!r}: unknown format {path.suffix!r}; "
            f"use one of {sorted(_READERS)}"
        ) from None


def connect_sandboxed(files: Sequence[Path]) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection that can read only ``files`` and nothing else."""
    con = duckdb.connect(
        ":memory:",
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )
    con.execute("SET enable_progress_bar = false")
    # One scan thread streams as fast as the single consumer converts batches, and keeps
    # DuckDB's buffered row groups (and so the load's peak memory) to one at a time.
    con.execute("SET threads = 1")
    con.execute("SET allowed_paths = ?", [[str(f) for f in files]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def describe_source(source: str | Path | Sequence[str | Path]) -> dict[str, str]:
    """Column names and DuckDB types of a log source (path, glob or list), without loading it."""
    files = resolve_sources(source)
    con = connect_sandboxed(files)
    try:
        return _describe(con, _source_sql(files), [str(f) for f in files])
    finally:
        con.close()


def _quote(identifier: str) -> str:
    # Identifiers are always checked against the source's own columns first; quoting guards
    # the SQL text against names with quotes or spaces that a real file may carry.
    return '"' + identifier.replace('"', '""') + '"'


def _source_sql(files: Sequence[Path]) -> str:
    reader = _reader_for(files[0])
    if reader == "read_csv":
        # NOTE: the sniffer's default candidates read "-inf" as a DATE and "inf" next to
        # numbers as text; scores are numbers, times are timestamps, nothing else is needed.
        return f"{reader}($files, auto_type_candidates={_CSV_TYPES})"
    return f"{reader}($files)"


def _describe(con: duckdb.DuckDBPyConnection, source_sql: str, files: list[str]) -> dict[str, str]:
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {source_sql}", {"files": files}).fetchall()
    except duckdb.Error as exc:
        raise SourceError(
            f"cannot read {files[0]!r}{' and others' if len(files) > 1 else ''} as a table: "
            f"{_first_line(exc)}"
        ) from None
    return {name: str(dtype) for name, dtype, *_ in rows}


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# --- schema detection ----------------------------------------------------------------------
def _resolve_schema(schema: Schema | str | Path | Mapping | None, columns: dict[str, str]) -> Schema:
    if isinstance(schema, Schema):
        resolved = schema
    elif isinstance(schema, (str, Path)):
        resolved = Schema.from_yaml(schema)
    elif isinstance(schema, Mapping):
        resolved = Schema.from_dict(schema)
    elif schema is None:
        names = detect_objective_names(columns)
        if not names:
            raise NoObjectivesError(
                f"no objective found: expected pairs of columns {SCORE_PREFIX}<name> and "
                f"{LABEL_PREFIX}<name> (or a schema mapping); the source has {list(columns)}"
            )
        resolved = Schema(
            objectives=tuple(
                Objective(name, SCORE_PREFIX + name, LABEL_PREFIX + name, kind="binary")
                for name in names
            ),
            ts_column="ts" if "ts" in columns else None,
        )
    else:
        raise SchemaError(f"schema must be a Schema, a mapping or a YAML path, got {type(schema).__name__}")
    wanted = resolved.required_columns()
    if resolved.ts_column is not None:
        wanted.append(resolved.ts_column)
    if resolved.slice_columns is not None:
        wanted += list(resolved.slice_columns)
    check_columns_exist(wanted, list(columns), what="schema")
    return resolved


def _slice_columns(schema: Schema, columns: dict[str, str]) -> list[str]:
    if schema.slice_columns is not None:
        return list(schema.slice_columns)
    used = set(schema.required_columns()) | {schema.ts_column}
    return [
        name
        for name, dtype in columns.items()
        if name not in used and (dtype.startswith(_SLICE_TYPES))
    ]


# --- filters -------------------------------------------------------------------------------
def _filter_sql(where: Sequence[Filter] | None, columns: dict[str, str]) -> tuple[str, dict[str, Any]]:
    if where is None:
        return "TRUE", {}
    if isinstance(where, tuple) and len(where) == 3 and isinstance(where[0], str):
        where = [where]
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for i, condition in enumerate(where):
        if not isinstance(condition, (tuple, list)) or len(condition) != 3:
            raise FilterError(f"filter #{i + 1} must be (column, op, value), got {condition!r}")
        column, op, value = condition
        if not isinstance(column, str) or column not in columns:
            check_columns_exist([str(column)], list(columns), what=f"filter #{i + 1}")
        name = f"f{i}"
        ident = _quote(column)
        if op in FILTER_OPS:
            if isinstance(value, (list, tuple, set, dict)):
                raise FilterError(f"filter on {column!r}: {op!r} takes one value, got {value!r}")
            clauses.append(f"{ident} {FILTER_OPS[op]} ${name}")
            params[name] = value
        elif op in ("in", "not_in"):
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set)):
                raise FilterError(f"filter on {column!r}: {op!r} takes a list of values, got {value!r}")
            values = list(value)
            if not values:
                raise FilterError(f"filter on {column!r}: {op!r} needs at least one value")
            clause = f"list_contains(${name}, {ident})"
            clauses.append(clause if op == "in" else f"NOT {clause}")
            params[name] = values
        elif op == "between":
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise FilterError(f"filter on {column!r}: 'between' takes (low, high), got {value!r}")
            clauses.append(f"{ident} BETWEEN ${name}_lo AND ${name}_hi")
            params[f"{name}_lo"], params[f"{name}_hi"] = value
        else:
            raise FilterError(
                f"filter on {column!r}: unknown operator {op!r}; "
                f"use one of {list(FILTER_OPS) + list(LIST_FILTER_OPS)}"
            )
    return " AND ".join(clauses) or "TRUE", params


# --- validation ----------------------------------------------------------------------------
def _check_numeric(con, source_sql: str, params: dict, columns: dict[str, str], schema: Schema) -> None:
    for objective in schema.objectives:
        for column in (objective.score_column, objective.label_column):
            dtype = columns[column]
            if dtype.startswith(_NUMERIC_TYPES) or dtype.startswith("DECIMAL"):
                continue
            ident = _quote(column)
            bad, example = con.execute(
                f"SELECT count(*), any_value({ident}) FROM {source_sql} "
                f"WHERE {ident} IS NOT NULL AND TRY_CAST({ident} AS DOUBLE) IS NULL",
                params,
            ).fetchall()[0]
            if not bad:
                # e.g. a CSV column with no value at all is sniffed as text: the cast to
                # float gives NULLs, which the value checks then report as missing.
                continue
            raise ColumnTypeError(
                f"column {column!r} (objective {objective.name!r}) must be numeric but is "
                f"{dtype}: {bad} row(s) are not numbers, e.g. {example!r}"
            )


def _check_float32_range(con, source_sql: str, condition: str, params: dict, schema: Schema) -> None:
    """Raise InvalidValueError for finite scores or labels too large for float32.

    Scores and labels are held as float32; DuckDB refuses to cast such a value, which would
    otherwise surface as a cast error that names no row. Runs only after a cast failed.
    """
    for objective in schema.objectives:
        for column in (objective.score_column, objective.label_column):
            value = f"TRY_CAST({_quote(column)} AS DOUBLE)"
            bad, example = con.execute(
                f"SELECT count(*), any_value({value}) FROM {source_sql} WHERE ({condition}) "
                f"AND isfinite({value}) AND abs({value}) > {_FLOAT32_MAX!r}",
                params,
            ).fetchall()[0]
            if bad:
                raise InvalidValueError(
                    f"column {column!r} (objective {objective.name!r}): {bad} row(s) are beyond "
                    f"the float32 range (|x| > {_FLOAT32_MAX:.4g}) scores and labels are held "
                    f"in, e.g. {example!r}"
                )


def _describe_row(ids: tuple[pa.ChunkedArray, pa.ChunkedArray], row: int) -> str:
    request, item = (column[row].as_py() for column in ids)
    return f"request {request!r}, item {item!r}"


def _validate_values(
    schema: Schema,
    scores: np.ndarray,
    labels: np.ndarray,
    ids: tuple[pa.ChunkedArray, pa.ChunkedArray],
    nan_policy: NanPolicy,
    *,
    detect_kinds: bool,
) -> tuple[Schema, np.ndarray | None, dict[str, int]]:
    """Check every value and, for auto-detected schemas, tell binary from graded objectives.

    Returns the schema, the mask of rows to keep (None: all) and the drop counts by reason.
    Each check first looks at a column's min and max, which settle the usual all-valid case
    without a per-row mask.
    """
    keep: np.ndarray | None = None
    excluded: dict[str, int] = {}
    for j, objective in enumerate(schema.objectives):
        for matrix, column in ((scores, objective.score_column), (labels, objective.label_column)):
            values = matrix[:, j]
            if np.isfinite(values.min()) and np.isfinite(values.max()):
                continue  # min/max propagate NaN and reach +-inf
            finite = np.isfinite(values)
            bad = int(finite.size - np.count_nonzero(finite))
            if nan_policy == "raise":
                row = int(np.argmin(finite))
                raise InvalidValueError(
                    f"column {column!r}: {bad} row(s) are missing, NaN or inf, e.g. "
                    f"{_describe_row(ids, row)}: {values[row]!r}; pass nan_policy='drop' "
                    "to drop such rows"
                )
            excluded[f"{column}: missing, NaN or inf"] = bad
            keep = finite if keep is None else keep & finite
    if keep is not None and not keep.any():
        raise EmptyLogsError(f"every row has a missing, NaN or inf value: {excluded}")

    def kept(values: np.ndarray) -> np.ndarray:
        return values if keep is None else values[keep]

    def check(values: np.ndarray, column: str, what: str, bad_rows, range_ok) -> None:
        valid = kept(values)
        if range_ok(valid.min(), valid.max()):
            return
        mask = bad_rows(values)
        if keep is not None:
            mask &= keep
        bad = int(np.count_nonzero(mask))
        if bad:
            row = int(np.argmax(mask))
            raise InvalidValueError(
                f"column {column!r}: {bad} row(s) {what}, e.g. {_describe_row(ids, row)}: "
                f"{float(values[row])!r}"
            )

    objectives = []
    for j, objective in enumerate(schema.objectives):
        score, label = scores[:, j], labels[:, j]
        check(label, objective.label_column, "are negative",
              lambda x: x < 0, lambda lo, hi: lo >= 0)
        if detect_kinds:
            valid = kept(label)
            # For labels in [0, 1], x * (1 - x) is 0 exactly when x is 0 or 1.
            binary = valid.max() <= 1 and not np.any(valid * (1 - valid))
            objective = dataclasses.replace(objective, kind="binary" if binary else "graded",
                                            gain=None)
        if objective.kind == "binary":
            check(label, objective.label_column,
                  "are not 0 or 1 (a binary label); declare the objective graded if it is not binary",
                  lambda x: (x != 0) & (x != 1), lambda lo, hi: False)
            check(score, objective.score_column, "are outside [0, 1] (a probability)",
                  lambda x: (x < 0) | (x > 1), lambda lo, hi: lo >= 0 and hi <= 1)
        else:
            check(score, objective.score_column, "are negative",
                  lambda x: x < 0, lambda lo, hi: lo >= 0)
        objectives.append(objective)
    return dataclasses.replace(schema, objectives=tuple(objectives)), keep, excluded


# --- loading -------------------------------------------------------------------------------
def load_logs(
    source: str | Path | Sequence[str | Path],
    schema: Schema | str | Path | Mapping | None = None,
    where: Sequence[Filter] | None = None,
    sample_requests: int | None = None,
    seed: int = 0,
    *,
    nan_policy: NanPolicy = "raise",
) -> LogSet:
    """Load prediction logs into a :class:`LogSet`, rows ordered by request.

    Parameters
    ----------
    source : path, glob or list of them
        Parquet, CSV or JSON (one format), read by embedded DuckDB.
    schema : Schema, mapping, YAML path or None
        None auto-detects ``pred_<o>``/``label_<o>`` pairs; an objective whose labels are
        all 0/1 is binary, otherwise graded.
    where : list of (column, op, value)
        Structured filters, ANDed: ops ``== != < <= > >= in not_in between``. Values are bound
        parameters; columns must exist in the source.
    sample_requests : int or None
        Keep this many whole requests, chosen reproducibly by ``seed``.
    nan_policy : {"raise", "drop"}
        Missing, NaN or inf scores/labels raise :class:`InvalidValueError` by default;
        ``"drop"`` drops those rows and counts them in ``LogSet.excluded``.

    Raises
    ------
    SourceError, SchemaError (MissingColumnError, NoObjectivesError, ColumnTypeError),
    FilterError, InvalidValueError, EmptyLogsError
    """
    if nan_policy not in ("raise", "drop"):
        raise FusionError(f"nan_policy must be 'raise' or 'drop', got {nan_policy!r}")
    if sample_requests is not None:
        sample_requests = _check_sample_size(sample_requests)
    files = resolve_sources(source)
    file_names = [str(f) for f in files]
    con = connect_sandboxed(files)
    try:
        source_sql = _source_sql(files)
        columns = _describe(con, source_sql, file_names)
        explicit = schema is not None
        resolved = _resolve_schema(schema, columns)
        slice_columns = _slice_columns(resolved, columns)
        condition, params = _filter_sql(where, columns)
        params["files"] = file_names
        _check_numeric(con, source_sql, params, columns, resolved)
        select, select_params = _select_sql(source_sql, condition, params, resolved,
                                            slice_columns, sample_requests, seed)
        try:
            columns_read = _read_columns(con, select, select_params, resolved, slice_columns)
        except FilterError:
            # A cast failed: name a score or label beyond float32 before blaming a filter.
            _check_float32_range(con, source_sql, condition, params, resolved)
            raise
    finally:
        con.close()
    if columns_read.n_rows == 0:
        raise EmptyLogsError(
            f"no rows in {file_names[0]!r}{' and others' if len(files) > 1 else ''}"
            + (f" after the filters {list(where)!r}" if where else "")
        )
    return _to_logset(columns_read, resolved, explicit, slice_columns, nan_policy,
                      _base_fingerprint(files, where, sample_requests, seed))


def _select_sql(source_sql, condition, params, schema, slice_columns, sample_requests, seed):
    request = _quote(schema.request_column)
    select = [
        f"{request} AS __request",
        f"{_quote(schema.user_column)} AS __user",
        f"{_quote(schema.item_column)} AS __item",
    ]
    for j, objective in enumerate(schema.objectives):
        select.append(f"CAST({_quote(objective.score_column)} AS FLOAT) AS __score{j}")
        select.append(f"CAST({_quote(objective.label_column)} AS FLOAT) AS __label{j}")
    if schema.ts_column is not None:
        select.append(f"CAST({_quote(schema.ts_column)} AS TIMESTAMP) AS __ts")
    select += [f"{_quote(c)} AS __slice{i}" for i, c in enumerate(slice_columns)]
    rows = f"SELECT * FROM {source_sql} WHERE {condition}"
    if sample_requests is not None:
        # Whole requests: pick request ids by a seeded hash order, then keep all their rows.
        rows = (
            f"WITH filtered AS ({rows}), kept AS (SELECT {request} FROM "
            f"(SELECT DISTINCT {request} FROM filtered) ORDER BY hash({request}, $seed), {request} "
            f"LIMIT $n) SELECT filtered.* FROM filtered SEMI JOIN kept USING ({request})"
        )
        params = dict(params, seed=int(seed), n=int(sample_requests))
    # NOTE: no ORDER BY: DuckDB would materialise every row to sort it. Rows stream out in
    # file order into preallocated arrays and are grouped by request in numpy afterwards.
    return f"SELECT {', '.join(select)} FROM ({rows})", params


@dataclasses.dataclass
class _Columns:
    """What one streaming read produced, still in source order."""

    n_rows: int
    scores: np.ndarray
    labels: np.ndarray
    ts: np.ndarray | None
    request: pa.ChunkedArray
    user: pa.ChunkedArray
    item: pa.ChunkedArray
    slices: list[pa.ChunkedArray]


def _read_columns(con, sql, params, schema, slice_columns) -> _Columns:
    m = len(schema.objectives)
    try:
        (n,), = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchall()
        reader = con.sql(sql, params=params).to_arrow_reader(_BATCH_ROWS)
        scores = np.empty((n, m), dtype=np.float32)
        labels = np.empty((n, m), dtype=np.float32)
        ts = None if schema.ts_column is None else np.empty(n, dtype="datetime64[us]")
        kept: dict[str, list[pa.Array]] = {"__request": [], "__user": [], "__item": []}
        kept.update({f"__slice{i}": [] for i in range(len(slice_columns))})
        position = 0
        for batch in reader:
            size = batch.num_rows
            stop = position + size
            if stop > n:
                raise SourceError("the source changed while it was being read; load it again")
            for j in range(m):
                scores[position:stop, j] = _to_numpy(batch.column(f"__score{j}"))
                labels[position:stop, j] = _to_numpy(batch.column(f"__label{j}"))
            if ts is not None:
                ts[position:stop] = _to_numpy(batch.column("__ts").cast(pa.timestamp("us")))
            for name, chunks in kept.items():
                chunks.append(_detach(batch.column(name)))
            position = stop
    except duckdb.ConversionException as exc:
        raise FilterError(f"a filter value (or a timestamp) does not fit its column's type: "
                          f"{_first_line(exc)}") from None
    except duckdb.Error as exc:
        raise SourceError(f"reading the logs failed: {_first_line(exc)}") from None
    if position != n:
        raise SourceError("the source changed while it was being read; load it again")
    chunked = {name: _concatenate(chunks) for name, chunks in kept.items()}
    return _Columns(
        n_rows=n, scores=scores, labels=labels, ts=ts,
        request=chunked["__request"], user=chunked["__user"], item=chunked["__item"],
        slices=[chunked[f"__slice{i}"] for i in range(len(slice_columns))],
    )


def _detach(array: pa.Array) -> pa.Array:
    """A copy of a batch's column that does not keep the rest of the batch alive.

    Batches come from DuckDB as one block of memory: holding one column of a batch would
    hold every column of it. Numbers are copied; text is dictionary-encoded (a copy too,
    and a compact one for repetitive ids and slices).
    """
    if (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)) and not array.null_count:
        return pa.array(array.to_numpy().copy())
    return pc.dictionary_encode(array)


def _concatenate(chunks: list[pa.Array]) -> pa.ChunkedArray:
    if not chunks:
        return pa.chunked_array([], type=pa.null())
    if len({chunk.type for chunk in chunks}) > 1:
        # Integer ids with a null in some batch only: make every batch text-encoded alike.
        chunks = [c if pa.types.is_dictionary(c.type) else pc.dictionary_encode(c) for c in chunks]
    if pa.types.is_dictionary(chunks[0].type):
        value_types = {c.type.value_type for c in chunks}
        if len(value_types) > 1:
            chunks = [pc.dictionary_encode(c.dictionary_decode().cast(pa.string())) for c in chunks]
        return pa.table({"c": pa.chunked_array(chunks)}).unify_dictionaries().column("c")
    return pa.chunked_array(chunks)


def _to_numpy(array: pa.Array) -> np.ndarray:
    # Nulls become NaN (floats) or NaT (timestamps), which validation then counts.
    return array.to_numpy(zero_copy_only=False)


def _to_logset(read: _Columns, schema: Schema, explicit: bool, slice_columns: list[str],
               nan_policy: NanPolicy, fingerprint: dict[str, Any]) -> LogSet:
    scores, labels = read.scores, read.labels
    schema, keep, excluded = _validate_values(schema, scores, labels, (read.request, read.item),
                                              nan_policy, detect_kinds=not explicit)
    if read.request.null_count:
        raise InvalidValueError(
            f"column {schema.request_column!r}: {read.request.null_count} row(s) have no request id"
        )
    request_ids, request_key = _request_keys(read.request)
    # Rows grouped by request, requests in id order; within a request rows keep source order.
    # Logs written request by request (the usual case) need no reordering at all.
    order = None
    if keep is not None or np.any(request_key[1:] < request_key[:-1]):
        order = np.argsort(request_key, kind="stable")
        if keep is not None:
            order = order[keep[order]]
        request_key = request_key[order]
    starts = np.flatnonzero(request_key[1:] != request_key[:-1]) + 1
    group_offsets = np.concatenate(([0], starts, [request_key.size])).astype(np.int64)
    first_rows = request_key[group_offsets[:-1]]
    request_ids = first_rows if request_ids is None else request_ids[first_rows]
    columns = {"user": read.user, "item": read.item, **dict(zip(slice_columns, read.slices))}
    take = None if order is None else pa.array(order)
    logset = LogSet(
        schema=schema,
        group_offsets=group_offsets,
        scores=_permute_rows(scores, order),
        labels=_permute_rows(labels, order),
        request_ids=request_ids,
        columns=columns if take is None else {name: c.take(take) for name, c in columns.items()},
        slice_names=tuple(slice_columns),
        ts=None if read.ts is None else _permute_rows(read.ts, order),
        fingerprint=fingerprint,
        excluded=excluded,
    )
    fingerprint.update(rows=logset.n_rows, requests=logset.n_requests)
    fingerprint["content_hash"] = _content_hash(fingerprint, logset.scores, logset.labels, group_offsets)
    return logset


def _request_keys(column: pa.ChunkedArray) -> tuple[np.ndarray | None, np.ndarray]:
    """A sortable integer key per row that orders rows as their request ids sort.

    Integer ids are their own key (returned ids None). Other ids are encoded, and the key is
    the rank of the row's id among the distinct ids, returned in sorted order.
    """
    if pa.types.is_integer(column.type):
        return None, column.to_numpy().astype(np.int64, copy=False)
    encoded = pc.dictionary_encode(column).combine_chunks()
    dictionary = encoded.dictionary
    by_value = pc.sort_indices(dictionary).to_numpy()
    rank_of_code = np.empty_like(by_value)
    rank_of_code[by_value] = np.arange(by_value.size)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    return dictionary.take(pa.array(by_value)).to_numpy(zero_copy_only=False), rank_of_code[codes]


def _permute_rows(values: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    if order is None:
        return values
    if values.ndim == 1:
        return values[order]
    # One column at a time: the temporary is a single column, never a second matrix.
    out = np.empty((order.size, values.shape[1]), dtype=values.dtype)
    for j in range(values.shape[1]):
        out[:, j] = values[:, j][order]
    return out


def _categorical(column: pa.ChunkedArray) -> pd.Categorical:
    encoded = pc.dictionary_encode(column).combine_chunks()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    dictionary = encoded.dictionary
    if pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type):
        categories = pd.Index(pd.array(dictionary, dtype=pd.ArrowDtype(dictionary.type)))
    else:
        categories = pd.Index(dictionary.to_numpy(zero_copy_only=False))
    return pd.Categorical.from_codes(codes, categories=categories)


def _base_fingerprint(files: Sequence[Path], where, sample_requests, seed) -> dict[str, Any]:
    return {
        "sources": [str(f) for f in files],
        "bytes": [f.stat().st_size for f in files],
        "filters": _jsonable(where),
        "sample_requests": None if sample_requests is None else {"n": sample_requests, "seed": seed},
    }


def _content_hash(fingerprint: dict, scores: np.ndarray, labels: np.ndarray, offsets: np.ndarray) -> str:
    """A hash of the values of each request that ignores row order within a request.

    Hashing bytes would depend on how the file was sorted; instead the bit patterns of each
    request's values are summed per column (wrapping uint64 arithmetic is exact and
    order-free), so a value that changes or moves to another request changes the hash.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({k: fingerprint.get(k) for k in ("rows", "requests")}).encode())
    digest.update(offsets.tobytes())
    per_row = np.empty(scores.shape[0], dtype=np.uint64)
    for matrix in (scores, labels):
        bits = matrix.view(np.uint32)
        digest.update(bits.sum(axis=0, dtype=np.uint64).tobytes())
        for begin in range(0, bits.shape[0], _BATCH_ROWS):  # chunks bound the cast temporaries
            bits[begin:begin + _BATCH_ROWS].sum(axis=1, dtype=np.uint64,
                                                out=per_row[begin:begin + _BATCH_ROWS])
        digest.update(np.add.reduceat(per_row, offsets[:-1]).tobytes())
    return digest.hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return str(value)

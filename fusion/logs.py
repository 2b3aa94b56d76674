"""Loading prediction logs through embedded DuckDB into a columnar :class:`LogSet`.

Security: each load opens its own in-memory DuckDB connection that may read only the
resolved source files (``allowed_paths``), then turns external access off and locks the
configuration before any user-influenced query runs. Filter values are bound parameters
and filter columns are checked against the source's columns, so hostile filter text can
neither read nor write another file.
"""

from __future__ import annotations

import dataclasses
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
    users, items : pandas.Categorical, length rows
        Per-row user and item ids; ``.codes`` are dense int codes usable as groups.
    slices : dict of str -> pandas.Categorical
        Per-row slice dimensions (e.g. ``surface``).
    ts : ndarray of datetime64 or None
    fingerprint : dict
        What the logs were loaded from (sources, filters, sampling, row and request counts,
        a content hash): stored in configs and studies to recognise the same logs.
    excluded : dict of str -> int
        Rows dropped on load, by reason (only with ``nan_policy="drop"``).
    """

    schema: Schema
    group_offsets: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    request_ids: np.ndarray
    users: pd.Categorical
    items: pd.Categorical
    slices: dict[str, pd.Categorical]
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

    @property
    def n_users(self) -> int:
        return int(len(self.users.categories))

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-row arrays (scores, labels, ids, slices, ts)."""
        total = self.scores.nbytes + self.labels.nbytes + self.group_offsets.nbytes
        for categorical in (self.users, self.items, *self.slices.values()):
            total += categorical.codes.nbytes
        return total + (0 if self.ts is None else self.ts.nbytes)

    def objective_index(self, name: str) -> int:
        try:
            return self.objectives.index(name)
        except ValueError:
            raise SchemaError(
                f"unknown objective {name!r}; these logs have {list(self.objectives)}"
            ) from None

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
        fingerprint = dict(self.fingerprint)
        fingerprint.update(rows=int(offsets[-1]), requests=int(len(request_indices)))
        fingerprint["content_hash"] = _content_hash(
            fingerprint, self.scores[rows], self.labels[rows], offsets
        )
        return dataclasses.replace(
            self,
            group_offsets=offsets,
            scores=np.ascontiguousarray(self.scores[rows]),
            labels=np.ascontiguousarray(self.labels[rows]),
            request_ids=self.request_ids[request_indices],
            users=_take_categorical(self.users, rows),
            items=_take_categorical(self.items, rows),
            slices={name: _take_categorical(c, rows) for name, c in self.slices.items()},
            ts=None if self.ts is None else self.ts[rows],
            fingerprint=fingerprint,
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


def _take_categorical(categorical: pd.Categorical, rows: np.ndarray) -> pd.Categorical:
    return pd.Categorical.from_codes(categorical.codes[rows], categories=categorical.categories)


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
    con.execute("SET allowed_paths = ?", [[str(f) for f in files]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _quote(identifier: str) -> str:
    # Identifiers are always checked against the source's own columns first; quoting guards
    # the SQL text against names with quotes or spaces that a real file may carry.
    return '"' + identifier.replace('"', '""') + '"'


def _source_sql(files: Sequence[Path]) -> str:
    reader = _reader_for(files[0])
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
            ).fetchone()
            raise ColumnTypeError(
                f"column {column!r} (objective {objective.name!r}) must be numeric but is "
                f"{dtype}: {bad} row(s) are not numbers, e.g. {example!r}"
            )


def _describe_row(logs_ids: tuple[pa.ChunkedArray, pa.ChunkedArray], row: int) -> str:
    request, item = (column[row].as_py() for column in logs_ids)
    return f"request {request!r}, item {item!r}"


def _validate_values(
    schema: Schema,
    scores: np.ndarray,
    labels: np.ndarray,
    ids: tuple[pa.ChunkedArray, pa.ChunkedArray],
    nan_policy: NanPolicy,
) -> tuple[np.ndarray | None, dict[str, int]]:
    """Check every value; return the mask of rows to keep (None: all) and drop counts."""
    keep: np.ndarray | None = None
    excluded: dict[str, int] = {}
    for j, objective in enumerate(schema.objectives):
        for matrix, column in ((scores, objective.score_column), (labels, objective.label_column)):
            finite = np.isfinite(matrix[:, j])
            bad = int(finite.size - np.count_nonzero(finite))
            if not bad:
                continue
            if nan_policy == "raise":
                row = int(np.argmin(finite))
                raise InvalidValueError(
                    f"column {column!r}: {bad} row(s) are missing, NaN or inf, e.g. "
                    f"{_describe_row(ids, row)}: {matrix[row, j]!r}; pass nan_policy='drop' "
                    "to drop such rows"
                )
            excluded[f"{column}: missing, NaN or inf"] = bad
            keep = finite if keep is None else keep & finite
    rows_ok = np.ones(scores.shape[0], dtype=bool) if keep is None else keep
    for j, objective in enumerate(schema.objectives):
        score, label = scores[:, j], labels[:, j]
        checks = [
            (label, objective.label_column, (label < 0), "are negative"),
        ]
        if objective.kind == "binary":
            checks += [
                (label, objective.label_column, (label != 0) & (label != 1),
                 "are not 0 or 1 (a binary label); declare the objective graded if it is not binary"),
                (score, objective.score_column, (score < 0) | (score > 1),
                 "are outside [0, 1] (a probability)"),
            ]
        else:
            checks.append((score, objective.score_column, score < 0, "are negative"))
        for values, column, bad_mask, what in checks:
            bad_mask &= rows_ok
            bad = int(np.count_nonzero(bad_mask))
            if bad:
                row = int(np.argmax(bad_mask))
                raise InvalidValueError(
                    f"column {column!r}: {bad} row(s) {what}, e.g. {_describe_row(ids, row)}: "
                    f"{float(values[row])!r}"
                )
    return keep, excluded


def _detect_kinds(schema: Schema, labels: np.ndarray, explicit: bool) -> Schema:
    """For auto-detected schemas: an objective whose labels are not all 0/1 is graded."""
    if explicit:
        return schema
    objectives = []
    for j, objective in enumerate(schema.objectives):
        column = labels[:, j]
        finite = column[np.isfinite(column)]
        binary = bool(np.all((finite == 0) | (finite == 1)))
        objectives.append(dataclasses.replace(objective, kind="binary" if binary else "graded",
                                              gain=None))
    return dataclasses.replace(schema, objectives=tuple(objectives))


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
        table = _fetch(con, source_sql, condition, params, resolved, slice_columns, sample_requests, seed)
    finally:
        con.close()
    if table.num_rows == 0:
        raise EmptyLogsError(
            f"no rows in {file_names[0]!r}{' and others' if len(files) > 1 else ''}"
            + (f" after the filters {list(where)!r}" if where else "")
        )
    return _to_logset(table, resolved, explicit, slice_columns, nan_policy,
                      _base_fingerprint(files, where, sample_requests, seed))


def _fetch(con, source_sql, condition, params, schema, slice_columns, sample_requests, seed) -> pa.Table:
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
    sql = f"SELECT {', '.join(select)} FROM ({rows}) ORDER BY __request, __item"
    try:
        return con.sql(sql, params=params).to_arrow_table()
    except duckdb.ConversionException as exc:
        raise FilterError(f"a filter value does not fit its column's type: {_first_line(exc)}") from None
    except duckdb.Error as exc:
        raise SourceError(f"reading the logs failed: {_first_line(exc)}") from None


def _to_logset(table: pa.Table, schema: Schema, explicit: bool, slice_columns: list[str],
               nan_policy: NanPolicy, fingerprint: dict[str, Any]) -> LogSet:
    n_objectives = len(schema.objectives)
    n = table.num_rows
    scores = np.empty((n, n_objectives), dtype=np.float32)
    labels = np.empty((n, n_objectives), dtype=np.float32)
    for j in range(n_objectives):
        _fill_column(scores, j, table.column(f"__score{j}"))
        _fill_column(labels, j, table.column(f"__label{j}"))
        table = table.drop_columns([f"__score{j}", f"__label{j}"])
    schema = _detect_kinds(schema, labels, explicit)
    ids = (table.column("__request"), table.column("__item"))
    keep, excluded = _validate_values(schema, scores, labels, ids, nan_policy)
    if keep is not None:
        kept_rows = np.flatnonzero(keep)
        if kept_rows.size == 0:
            raise EmptyLogsError(f"every row has a missing, NaN or inf value: {excluded}")
        scores, labels = scores[kept_rows], labels[kept_rows]
        table = table.take(pa.array(kept_rows))

    request = table.column("__request")
    if request.null_count:
        raise InvalidValueError(
            f"column {schema.request_column!r}: {request.null_count} row(s) have no request id"
        )
    if n > 1:
        changes = pc.not_equal(request.slice(1), request.slice(0, table.num_rows - 1))
        starts = np.flatnonzero(changes.to_numpy(zero_copy_only=False)) + 1
    else:
        starts = np.empty(0, dtype=np.int64)
    group_offsets = np.concatenate(([0], starts, [table.num_rows])).astype(np.int64)
    request_ids = request.take(pa.array(group_offsets[:-1])).to_numpy(zero_copy_only=False)

    ts = None
    if schema.ts_column is not None:
        ts = table.column("__ts").to_numpy()
    logset = LogSet(
        schema=schema,
        group_offsets=group_offsets,
        scores=scores,
        labels=labels,
        request_ids=request_ids,
        users=_categorical(table.column("__user")),
        items=_categorical(table.column("__item")),
        slices={name: _categorical(table.column(f"__slice{i}")) for i, name in enumerate(slice_columns)},
        ts=ts,
        fingerprint=fingerprint,
        excluded=excluded,
    )
    fingerprint.update(rows=logset.n_rows, requests=logset.n_requests)
    fingerprint["content_hash"] = _content_hash(fingerprint, scores, labels, group_offsets)
    return logset


def _fill_column(matrix: np.ndarray, j: int, column: pa.ChunkedArray) -> None:
    # Chunk by chunk straight into the matrix: no full-length temporary column.
    position = 0
    for chunk in column.chunks:
        values = chunk.to_numpy(zero_copy_only=False)
        matrix[position:position + len(values), j] = values
        position += len(values)


def _categorical(column: pa.ChunkedArray) -> pd.Categorical:
    encoded = pc.dictionary_encode(column).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    codes = np.where(np.isnan(codes), -1, codes).astype(np.int32) if codes.dtype.kind == "f" else codes.astype(np.int32, copy=False)
    return pd.Categorical.from_codes(codes, categories=pd.Index(encoded.dictionary.to_pylist()))


def _base_fingerprint(files: Sequence[Path], where, sample_requests, seed) -> dict[str, Any]:
    return {
        "sources": [str(f) for f in files],
        "bytes": [f.stat().st_size for f in files],
        "filters": _jsonable(where),
        "sample_requests": None if sample_requests is None else {"n": sample_requests, "seed": seed},
    }


def _content_hash(fingerprint: dict, scores: np.ndarray, labels: np.ndarray, offsets: np.ndarray) -> str:
    # Hashing every byte would cost as much as the load; column sums plus every row of a
    # strided sample of rows catch any realistic change for a fraction of that.
    digest = hashlib.sha256()
    digest.update(json.dumps({k: fingerprint.get(k) for k in ("rows", "requests")}).encode())
    digest.update(offsets.tobytes())
    stride = max(1, scores.shape[0] // 65536)
    for matrix in (scores, labels):
        digest.update(matrix.sum(axis=0, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(matrix[::stride]).tobytes())
    return digest.hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return str(value)

"""Studies: a search persisted in a DuckDB file, batch by batch, and the result view of it.

A study file holds

- ``study_meta``: one JSON document per key: the format version, the fingerprint and schema
  of the logs searched, the search settings (seed included), the baseline (formula, where it
  came from, its metrics) and the objective order of the weight vectors;
- ``candidates``: one row per candidate (its batch, weight and alpha vectors, metric vector,
  feasibility and the search time when its batch finished).

Each finished batch is written in one transaction before the next batch starts, so a search
killed at any moment (even with SIGKILL) keeps every finished batch. Re-running the search
with the same study replays the stored batches instead of evaluating them and continues
where it stopped; because the search is deterministic given its seed, the result is the one
an uninterrupted run gives. A study recorded for other logs or other settings is refused
with a :class:`StudyError` naming the difference; only the settings that change how the
candidates are viewed (preference, reference point) may change, and are updated.

Vectors are stored as ``DOUBLE[]`` lists whose positions are named in ``study_meta`` (the
logs' objectives for weights and alphas, the metric columns for metrics), so the tables have
fixed columns and no identifier is ever built from user input. Values are bound with ``?``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from .errors import StudyError
from .formulas import Formula
from .pareto import closest_to_preference, hypervolume, knee_point, pareto_ranks, update_front
from .schema import Schema

STUDY_FORMAT = 1
# Settings that only change how the candidates are viewed: a resumed search may change them.
VIEW_SETTINGS: tuple[str, ...] = ("preference", "reference_point")
HISTORY_ROWS = 100              # at most this many history rows (evenly spread batches)

_SCHEMA_SQL = (
    "CREATE TABLE IF NOT EXISTS study_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    "CREATE TABLE IF NOT EXISTS candidates (candidate_id INTEGER PRIMARY KEY,"
    " batch INTEGER NOT NULL, weights DOUBLE[] NOT NULL, alphas DOUBLE[],"
    " metrics DOUBLE[] NOT NULL, feasible BOOLEAN NOT NULL, elapsed_s DOUBLE NOT NULL)",
)
_META_KEYS = ("format", "fingerprint", "schema", "objectives", "settings", "baseline",
              "metric_columns", "tool_version")

__all__ = [
    "Batch",
    "SearchResult",
    "StudyStore",
    "build_result",
    "connect",
    "open_study",
]


# --- the one place that opens DuckDB files -------------------------------------------------
def connect(path: str | Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open a study file; DuckDB errors become :class:`StudyError`.

    The connection cannot load extensions or touch any file but the study itself.
    """
    path = Path(path)
    if read_only and not path.is_file():
        raise StudyError(f"study {str(path)!r} does not exist")
    if not read_only and not path.parent.is_dir():
        raise StudyError(f"cannot create study {str(path)!r}: directory "
                         f"{str(path.parent)!r} does not exist")
    try:
        con = duckdb.connect(
            str(path), read_only=read_only,
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        raise StudyError(f"cannot open study {str(path)!r}: {_first_line(exc)}") from None
    return con


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- writing ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Batch:
    """One batch of candidates.

    ``weights`` (n, objectives of the logs); ``alphas`` the same shape (NaN where not
    searched) or None; ``metrics`` (n, metric columns); ``feasible`` (n,) bool;
    ``elapsed_s`` (n,) search time when the batch finished.
    """

    weights: np.ndarray
    alphas: np.ndarray | None
    metrics: np.ndarray
    feasible: np.ndarray
    elapsed_s: np.ndarray


class StudyStore:
    """Read and append the batches of one study (not thread-safe: one search at a time).

    Opening with :meth:`open` creates the study if the file is new, and otherwise checks
    that it was recorded for the same logs and settings.
    """

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection, meta: dict[str, Any]) -> None:
        self.path = path
        self._con = con
        self.meta = meta
        self._batches = _read_batches(con)

    @classmethod
    def open(cls, path: str | Path, meta: Mapping[str, Any]) -> StudyStore:
        """Open (or create) the study at ``path`` for a search described by ``meta``.

        Raises
        ------
        StudyError
            The file is not a study, has another format, or was recorded for other logs or
            other settings (the message names each difference).
        """
        path = Path(path)
        meta = _jsonable(dict(meta))
        con = connect(path, read_only=False)
        try:
            stored = _read_meta(con, path, allow_empty=True)
            if stored is None:
                cur = con.cursor()
                cur.begin()
                for statement in _SCHEMA_SQL:
                    cur.execute(statement)
                cur.executemany("INSERT INTO study_meta VALUES (?, ?)",
                                [[key, json.dumps(meta[key])] for key in _META_KEYS])
                cur.commit()
            else:
                _check_same_search(path, stored, meta)
                view = {key: meta["settings"][key] for key in VIEW_SETTINGS}
                if any(stored["settings"].get(key) != value for key, value in view.items()):
                    stored["settings"].update(view)
                    con.cursor().execute("UPDATE study_meta SET value = ? WHERE key = 'settings'",
                                         [json.dumps(stored["settings"])])
                meta = stored
            return cls(path, con, meta)
        except BaseException:
            con.close()
            raise

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stored(self, batch: int) -> Batch | None:
        """The stored batch number ``batch``, or None."""
        return self._batches.get(batch)

    def last_elapsed(self) -> float:
        """Search time recorded with the last stored batch (0 for a new study)."""
        return max((float(b.elapsed_s.max()) for b in self._batches.values()), default=0.0)

    def write(self, batch: int, rows: Batch, first_id: int) -> None:
        """Append batch number ``batch`` in a single transaction (all its rows or none)."""
        alphas = [None] * len(rows.weights) if rows.alphas is None else rows.alphas.tolist()
        weights, metrics = rows.weights.tolist(), rows.metrics.tolist()
        feasible, elapsed = rows.feasible.tolist(), rows.elapsed_s.tolist()
        records = [[first_id + i, batch, weights[i], alphas[i], metrics[i], feasible[i], elapsed[i]]
                   for i in range(len(weights))]
        cur = self._con.cursor()
        try:
            cur.begin()
            cur.executemany("INSERT INTO candidates VALUES (?, ?, ?, ?, ?, ?, ?)", records)
            cur.commit()
        except duckdb.Error as exc:
            cur.rollback()
            raise StudyError(f"cannot write to study {str(self.path)!r}: "
                             f"{_first_line(exc)}") from None
        self._batches[batch] = rows


def _read_batches(con: duckdb.DuckDBPyConnection) -> dict[int, Batch]:
    rows = con.cursor().execute(
        "SELECT batch, weights, alphas, metrics, feasible, elapsed_s FROM candidates "
        "ORDER BY candidate_id").fetchall()
    grouped: dict[int, list[tuple]] = {}
    for row in rows:
        grouped.setdefault(int(row[0]), []).append(row)
    batches = {}
    for number, members in grouped.items():
        has_alphas = members[0][2] is not None
        batches[number] = Batch(
            weights=np.array([r[1] for r in members], dtype=np.float64),
            alphas=np.array([r[2] for r in members], dtype=np.float64) if has_alphas else None,
            metrics=np.array([r[3] for r in members], dtype=np.float64),
            feasible=np.array([r[4] for r in members], dtype=bool),
            elapsed_s=np.array([r[5] for r in members], dtype=np.float64),
        )
    return batches


def _read_meta(con: duckdb.DuckDBPyConnection, path: Path, *, allow_empty: bool) -> dict | None:
    cur = con.cursor()
    tables = {row[0] for row in cur.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
    if not tables and allow_empty:
        return None
    missing = [t for t in ("study_meta", "candidates") if t not in tables]
    if missing:
        raise StudyError(f"{str(path)!r} is not a study: table {missing[0]!r} is missing "
                         f"({len(missing)} of 2 study tables missing)")
    meta = {key: json.loads(value) for key, value in
            cur.execute("SELECT key, value FROM study_meta").fetchall()}
    absent = [key for key in _META_KEYS if key not in meta]
    if absent:
        raise StudyError(f"study {str(path)!r} is incomplete: {len(absent)} metadata field(s) "
                         f"missing, e.g. {absent[0]!r}")
    if meta["format"] != STUDY_FORMAT:
        raise StudyError(f"study {str(path)!r} has format {meta['format']!r}; this version reads "
                         f"format {STUDY_FORMAT}")
    return meta


def _check_same_search(path: Path, stored: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    recorded, given = stored["fingerprint"], meta["fingerprint"]
    changed = [k for k in ("content_hash", "rows", "requests") if recorded.get(k) != given.get(k)]
    if changed:
        raise StudyError(
            f"study {str(path)!r} was recorded for other logs: {len(changed)} fingerprint "
            f"field(s) differ, e.g. {changed[0]} {recorded.get(changed[0])!r} (study) vs "
            f"{given.get(changed[0])!r} (these logs from {given.get('sources')!r})"
        )
    differences = [
        (f"settings.{key}", stored["settings"].get(key), meta["settings"].get(key))
        for key in sorted(set(stored["settings"]) | set(meta["settings"]))
        if key not in VIEW_SETTINGS and stored["settings"].get(key) != meta["settings"].get(key)
    ]
    for key in ("objectives", "metric_columns"):
        if stored[key] != meta[key]:
            differences.append((key, stored[key], meta[key]))
    if stored["baseline"]["formula"] != meta["baseline"]["formula"]:
        differences.append(("baseline", stored["baseline"]["formula"], meta["baseline"]["formula"]))
    if differences:
        shown = "; ".join(f"{name}: {old!r} (study) vs {new!r} (now)"
                          for name, old, new in differences)
        raise StudyError(
            f"study {str(path)!r} was recorded with other settings: {len(differences)} "
            f"difference(s): {shown}; use a new study file or the same settings"
        )


def _jsonable(value: Any) -> Any:
    """Plain JSON types (tuples become lists), so stored and given settings compare equal."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a study")


# --- the result view ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class SearchResult:
    """Every candidate of a search, its feasible Pareto front and the picks on it.

    Attributes
    ----------
    candidates : DataFrame
        One row per candidate, in evaluation order:
        ``candidate_id``, ``batch``, ``w:<objective>`` for every objective of the logs (on the
        simplex), ``alpha:<objective>`` when alphas were searched, ``<objective>:<metric>``
        for every searched metric and every constrained one, ``feasible`` (all constraints
        hold and every searched metric is defined), ``pareto_rank`` (non-dominated sorting
        rank among the feasible candidates, 0 = on the front; -1 for infeasible ones) and
        ``elapsed_s`` (search time when the candidate's batch finished).
    front : DataFrame
        The rows of ``candidates`` with ``pareto_rank == 0``.
    hypervolume : float
        Hypervolume of the feasible candidates' searched metrics above ``reference_point``
        (0.0 when none is strictly better than it in every metric).
    reference_point : dict of str -> float
        One value per searched metric column.
    reference_source : {"baseline", "nadir", "given"}
        Where the reference point comes from: the baseline's metrics, the per-metric worst
        value of the feasible front (nadir), or the caller.
    knee_id, preferred_id : int or None
        The knee of the front (:func:`fusion.pareto.knee_point`) and the front point closest
        to the stated preference (:func:`fusion.pareto.closest_to_preference`); None when
        the front is empty (``preferred_id`` also when no preference was stated).
    baseline_formula : Formula
    baseline_metrics : dict of str -> float
        The baseline's value of every searched and constrained metric column.
    baseline_source : str
        Where the baseline comes from (``"equal weights (default)"``, ``"formula"``, or
        ``"config <name>"``).
    history : DataFrame
        ``elapsed_s``, ``evaluations``, ``hypervolume`` after every finished batch (after
        100 evenly spread ones, the last included, for longer searches), all against
        ``reference_point``: the search's progress over time.
    objective_columns : list of str
        The searched metric columns, e.g. ``["click:gauc", "dwell:ndcg@10"]``.
    constraints : list of str
        The constraints, in canonical form.
    kind : str
        The formula kind searched.
    settings : dict
        The search settings (as recorded in a study).
    logs_fingerprint : dict
    logs_schema : Schema
    complete : bool
        Whether the whole budget was evaluated (False for an interrupted study, or a search
        stopped by ``max_seconds``).
    """

    candidates: pd.DataFrame
    front: pd.DataFrame
    hypervolume: float
    reference_point: dict[str, float]
    reference_source: str
    knee_id: int | None
    preferred_id: int | None
    baseline_formula: Formula
    baseline_metrics: dict[str, float]
    baseline_source: str
    history: pd.DataFrame
    objective_columns: list[str]
    constraints: list[str]
    kind: str
    settings: dict[str, Any]
    logs_fingerprint: dict[str, Any]
    logs_schema: Schema
    complete: bool

    def formula(self, candidate_id: int) -> Formula:
        """The fusion formula of one candidate (weights on the simplex)."""
        rows = self.candidates.index[self.candidates["candidate_id"] == candidate_id]
        if len(rows) == 0:
            raise StudyError(f"no candidate {candidate_id!r}: ids run from 0 to "
                             f"{len(self.candidates) - 1}")
        row = self.candidates.loc[rows[0]]
        objectives = self.logs_schema.objective_names
        weights = {o: float(row[f"w:{o}"]) for o in objectives}
        settings = self.settings
        alphas = dict(settings.get("alphas") or {})
        if settings.get("search_alphas"):
            alphas.update({o: float(row[f"alpha:{o}"]) for o in settings["alpha_objectives"]})
        return Formula.of(self.kind, weights, alphas=alphas or None,
                          transforms=settings.get("transforms") or None, k=settings.get("k"))


def build_result(meta: Mapping[str, Any], batches: Sequence[Batch], *,
                 batch_numbers: Sequence[int] | None = None) -> SearchResult:
    """Assemble a :class:`SearchResult` from a study's metadata and its batches.

    Feasibility is taken as recorded; ranks, the front, the reference point, hypervolume,
    knee, preferred point and history are computed here, so a search and a re-opened study
    give the same view.
    """
    settings = meta["settings"]
    objectives = list(meta["objectives"])
    metric_columns = list(meta["metric_columns"])
    objective_columns = [f"{o}:{m}" for o, m in settings["objectives"]]
    alpha_objectives = list(settings.get("alpha_objectives") or [])
    numbers = list(range(len(batches))) if batch_numbers is None else list(batch_numbers)

    weights = _stack([b.weights for b in batches], len(objectives))
    metrics = _stack([b.metrics for b in batches], len(metric_columns))
    feasible = np.concatenate([b.feasible for b in batches]) if batches else np.zeros(0, bool)
    elapsed = np.concatenate([b.elapsed_s for b in batches]) if batches else np.zeros(0)
    batch_of = np.repeat(np.array(numbers, dtype=np.int64),
                         [len(b.weights) for b in batches]).astype(np.int64)

    columns: dict[str, Any] = {"candidate_id": np.arange(len(weights), dtype=np.int64),
                               "batch": batch_of}
    for j, name in enumerate(objectives):
        columns[f"w:{name}"] = weights[:, j]
    if alpha_objectives:
        alphas = _stack([b.alphas for b in batches], len(objectives))
        for name in alpha_objectives:
            columns[f"alpha:{name}"] = alphas[:, objectives.index(name)]
    for j, column in enumerate(metric_columns):
        columns[column] = metrics[:, j]
    searched = metrics[:, [metric_columns.index(c) for c in objective_columns]]
    ranks = np.full(len(weights), -1, dtype=np.int64)
    ranks[feasible] = pareto_ranks(searched[feasible])
    columns["feasible"] = feasible
    columns["pareto_rank"] = ranks
    columns["elapsed_s"] = elapsed
    candidates = pd.DataFrame(columns)
    front_rows = np.flatnonzero(ranks == 0)
    front = candidates.iloc[front_rows].reset_index(drop=True)

    baseline = meta["baseline"]
    baseline_metrics = {c: float(baseline["metrics"][c]) for c in metric_columns}
    reference, reference_source = resolve_reference(
        settings.get("reference_point"), objective_columns, baseline_metrics, searched[front_rows])
    knee_id = preferred_id = None
    if len(front_rows):
        points = searched[front_rows]
        knee_id = int(front_rows[knee_point(points, reference)])
        if settings.get("preference") is not None:
            preference = [settings["preference"][c] for c in objective_columns]
            preferred_id = int(front_rows[closest_to_preference(points, preference, reference)])
    return SearchResult(
        candidates=candidates,
        front=front,
        hypervolume=hypervolume(searched[front_rows], reference) if len(front_rows) else 0.0,
        reference_point=dict(zip(objective_columns, reference.tolist())),
        reference_source=reference_source,
        knee_id=knee_id,
        preferred_id=preferred_id,
        baseline_formula=Formula.from_dict(baseline["formula"]),
        baseline_metrics=baseline_metrics,
        baseline_source=str(baseline["source"]),
        history=_history(searched, feasible, elapsed, batch_of, reference),
        objective_columns=objective_columns,
        constraints=list(settings.get("constraints") or []),
        kind=str(settings["kind"]),
        settings=dict(settings),
        logs_fingerprint=dict(meta["fingerprint"]),
        logs_schema=Schema.from_dict(meta["schema"]),
        complete=len(weights) >= int(settings["budget"]),
    )


def _stack(parts: Sequence[np.ndarray], width: int) -> np.ndarray:
    return np.vstack(parts) if parts else np.zeros((0, width))


def resolve_reference(setting: Any, objective_columns: Sequence[str],
                      baseline_metrics: Mapping[str, float],
                      front: np.ndarray) -> tuple[np.ndarray, str]:
    """The reference point for a ``reference_point`` setting (see :func:`fusion.search`).

    ``None``: the baseline's metrics when some front point is strictly better than the
    baseline in every searched metric, else the nadir of the front. ``"baseline"``,
    ``"nadir"``, or a mapping of metric column -> value. With an empty front the nadir is
    undefined and the baseline's metrics are returned (NaN where a baseline metric is
    undefined: nothing is measured against an empty front anyway).
    """
    base = np.array([baseline_metrics[c] for c in objective_columns], dtype=np.float64)
    if isinstance(setting, Mapping):
        return np.array([float(setting[c]) for c in objective_columns]), "given"
    if setting == "baseline" or len(front) == 0:
        return base, "baseline"
    if setting is None and np.all(np.isfinite(base)) and np.any(np.all(front > base, axis=1)):
        return base, "baseline"
    return front.min(axis=0), "nadir"


def _history(searched: np.ndarray, feasible: np.ndarray, elapsed: np.ndarray,
             batch_of: np.ndarray, reference: np.ndarray) -> pd.DataFrame:
    records = []
    front = np.empty((0, searched.shape[1]))
    ends = np.flatnonzero(np.diff(batch_of, append=np.int64(-1)) != 0) + 1
    shown = set(np.linspace(0, len(ends) - 1, min(len(ends), HISTORY_ROWS)).round().astype(int))
    start = 0
    for number, end in enumerate(ends):
        new = searched[start:end][feasible[start:end]]
        kept, added = update_front(front, new)
        front = np.vstack([front[kept], new[added]])
        if number in shown:
            volume = hypervolume(front, reference) if len(front) else 0.0
            records.append((float(elapsed[end - 1]), int(end), volume))
        start = end
    return pd.DataFrame(records, columns=["elapsed_s", "evaluations", "hypervolume"]).astype(
        {"elapsed_s": "float64", "evaluations": "int64", "hypervolume": "float64"})


# --- reading ------------------------------------------------------------------------------
def open_study(path: str | Path) -> SearchResult:
    """Load a saved study, read-only, as a :class:`SearchResult`.

    Works on an interrupted study too (``result.complete`` is then False). The logs are not
    needed: everything the view shows is stored in the study.

    Raises
    ------
    StudyError
        The file does not exist, is not a study, has another format, or is open for writing
        by a running search.
    """
    path = Path(path)
    con = connect(path, read_only=True)
    try:
        meta = _read_meta(con, path, allow_empty=False)
        stored = _read_batches(con)
    finally:
        con.close()
    numbers = sorted(stored)
    return build_result(meta, [stored[n] for n in numbers], batch_numbers=numbers)

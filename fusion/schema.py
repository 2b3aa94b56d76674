"""Objectives and the mapping from a log's columns to them.

A log has one row per scored impression: ids (``request_id``, ``user_id``, ``item_id``),
an optional timestamp, and per objective a score column and a label column. The canonical
names are ``pred_<objective>`` / ``label_<objective>``; a :class:`Schema` maps any other
names (given in Python or in a YAML mapping file).

YAML mapping format::

    request: search_id          # defaults: request_id, user_id, item_id, ts
    user: uid
    item: doc_id
    ts: event_time              # optional; null for none
    objectives:
      click: {score: p_ctr, label: is_click}
      watch: {score: p_watch, label: play_time_ms, kind: graded,
              positive_threshold: 30000, gain: log1p}
    slices: [country, device]   # optional; default: every other text/integer column
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from .errors import MissingColumnError, NoObjectivesError, SchemaError

ObjectiveKind = Literal["binary", "graded"]
Gain = Literal["linear", "log1p"]

OBJECTIVE_KINDS: tuple[str, ...] = ("binary", "graded")
GAINS: tuple[str, ...] = ("linear", "log1p")
SCORE_PREFIX = "pred_"
LABEL_PREFIX = "label_"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective: where its score and label live and how its label is read.

    Parameters
    ----------
    name : str
        Identifier-like name (letters, digits, ``_``), e.g. ``"click"``.
    score_column, label_column : str
        Source columns of the predicted score and the observed label.
    kind : {"binary", "graded"}
        Binary: label in {0, 1}, score a probability in [0, 1]. Graded: label >= 0
        (e.g. dwell seconds), score >= 0.
    positive_threshold : float
        A row is a positive for AUC-type metrics when ``label > positive_threshold``
        (default 0: any click, any dwell).
    gain : {"linear", "log1p"} or None
        NDCG gain of a label; None picks the kind's default (binary: linear, graded: log1p).
    """

    name: str
    score_column: str
    label_column: str
    kind: ObjectiveKind = "binary"
    positive_threshold: float = 0.0
    gain: Gain | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SchemaError(
                f"objective name {self.name!r} is not valid: use letters, digits and '_' "
                "and start with a letter or '_'"
            )
        if self.kind not in OBJECTIVE_KINDS:
            raise SchemaError(
                f"objective {self.name!r}: kind {self.kind!r} is not one of {OBJECTIVE_KINDS}"
            )
        if self.gain is None:
            object.__setattr__(self, "gain", "linear" if self.kind == "binary" else "log1p")
        elif self.gain not in GAINS:
            raise SchemaError(f"objective {self.name!r}: gain {self.gain!r} is not one of {GAINS}")
        try:
            threshold = float(self.positive_threshold)
        except (TypeError, ValueError):
            raise SchemaError(
                f"objective {self.name!r}: positive_threshold {self.positive_threshold!r} "
                "is not a number"
            ) from None
        if threshold != threshold or threshold in (float("inf"), float("-inf")):
            raise SchemaError(f"objective {self.name!r}: positive_threshold must be finite")
        object.__setattr__(self, "positive_threshold", threshold)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Schema:
    """Which columns of a log hold the ids, the timestamp, the slices and each objective.

    ``slice_columns=None`` means every remaining text or integer column is a slice.
    ``ts_column=None`` means there is no timestamp.
    """

    objectives: tuple[Objective, ...]
    request_column: str = "request_id"
    user_column: str = "user_id"
    item_column: str = "item_id"
    ts_column: str | None = "ts"
    slice_columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        objectives = tuple(self.objectives)
        if not objectives:
            raise NoObjectivesError("the schema has no objective")
        names = [o.name for o in objectives]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise SchemaError(f"objective names must be unique; repeated: {duplicated}")
        object.__setattr__(self, "objectives", objectives)
        if self.slice_columns is not None:
            object.__setattr__(self, "slice_columns", tuple(self.slice_columns))

    @property
    def objective_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objectives)

    def objective(self, name: str) -> Objective:
        for objective in self.objectives:
            if objective.name == name:
                return objective
        raise SchemaError(f"unknown objective {name!r}; known: {list(self.objective_names)}")

    def required_columns(self) -> list[str]:
        """Columns the source must have (ids and every score and label column)."""
        columns = [self.request_column, self.user_column, self.item_column]
        for objective in self.objectives:
            columns += [objective.score_column, objective.label_column]
        return columns

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request_column,
            "user": self.user_column,
            "item": self.item_column,
            "ts": self.ts_column,
            "objectives": {
                o.name: {
                    "score": o.score_column,
                    "label": o.label_column,
                    "kind": o.kind,
                    "positive_threshold": o.positive_threshold,
                    "gain": o.gain,
                }
                for o in self.objectives
            },
            "slices": None if self.slice_columns is None else list(self.slice_columns),
        }

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> Schema:
        """Build a schema from the YAML mapping format (see the module docstring)."""
        if not isinstance(mapping, Mapping):
            raise SchemaError(f"a schema mapping must be a mapping, got {type(mapping).__name__}")
        known = {"request", "user", "item", "ts", "objectives", "slices"}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise SchemaError(f"unknown schema field(s) {unknown}; known: {sorted(known)}")
        raw_objectives = mapping.get("objectives")
        if not isinstance(raw_objectives, Mapping) or not raw_objectives:
            raise NoObjectivesError(
                "schema field 'objectives' must map each objective name to "
                "{score: <column>, label: <column>, ...}"
            )
        objectives = []
        for name, spec in raw_objectives.items():
            if not isinstance(spec, Mapping) or "score" not in spec or "label" not in spec:
                raise SchemaError(
                    f"objective {name!r}: needs 'score' and 'label' columns, got {spec!r}"
                )
            extra = sorted(set(spec) - {"score", "label", "kind", "positive_threshold", "gain"})
            if extra:
                raise SchemaError(f"objective {name!r}: unknown field(s) {extra}")
            objectives.append(
                Objective(
                    name=str(name),
                    score_column=str(spec["score"]),
                    label_column=str(spec["label"]),
                    kind=spec.get("kind", "binary"),
                    positive_threshold=spec.get("positive_threshold", 0.0),
                    gain=spec.get("gain"),
                )
            )
        slices = mapping.get("slices")
        if slices is not None and (
            isinstance(slices, str) or not all(isinstance(s, str) for s in slices)
        ):
            raise SchemaError(f"schema field 'slices' must be a list of column names, got {slices!r}")
        return cls(
            objectives=tuple(objectives),
            request_column=str(mapping.get("request", "request_id")),
            user_column=str(mapping.get("user", "user_id")),
            item_column=str(mapping.get("item", "item_id")),
            ts_column=mapping.get("ts", "ts"),
            slice_columns=None if slices is None else tuple(slices),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> Schema:
        import yaml

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaError(f"cannot read schema mapping {str(path)!r}: {exc.strerror}") from None
        try:
            mapping = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SchemaError(f"schema mapping {str(path)!r} is not valid YAML: {exc}") from None
        return cls.from_dict(mapping)


def detect_objective_names(columns: Iterable[str]) -> list[str]:
    """Objective names with both ``pred_<o>`` and ``label_<o>`` columns, in column order."""
    columns = list(columns)
    labels = {c[len(LABEL_PREFIX):] for c in columns if c.startswith(LABEL_PREFIX)}
    return [
        c[len(SCORE_PREFIX):]
        for c in columns
        if c.startswith(SCORE_PREFIX) and c[len(SCORE_PREFIX):] in labels
    ]


def check_columns_exist(wanted: Sequence[str], available: Sequence[str], *, what: str) -> None:
    """Raise MissingColumnError naming every missing column and its closest match."""
    missing = [c for c in wanted if c not in available]
    if not missing:
        return
    hints = []
    for column in missing:
        close = difflib.get_close_matches(column, list(available), n=1)
        hints.append(f"{column!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise MissingColumnError(
        f"{what}: {len(missing)} column(s) not in the source: {', '.join(hints)}; "
        f"the source has {list(available)}"
    )

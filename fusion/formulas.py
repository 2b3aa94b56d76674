"""Fusion formulas: how per-objective scores become one ranking score.

Every formula is linear in its weights after a per-objective feature transform, which is
what lets :func:`fusion.evaluate_many` and the search score many weight vectors at once:

==========  =======================================  ======================================
kind        feature ``x_o``                           fused score
==========  =======================================  ======================================
``sum``     ``T_o(p_o)``                              ``sum_o w_o * x_o``
``product`` ``log(p_o + alpha_o)``                    ``sum_o w_o * x_o`` (log of the product)
``rank``    ``1 / (r_o + k)``                         ``sum_o w_o * x_o``
==========  =======================================  ======================================

``T_o`` is one of ``identity``, ``log`` (``log(p + alpha)``), or a within-request transform:
``minmax`` ``(p - min) / (max - min)`` (0 when max == min), ``zscore`` ``(p - mean) / std``
with the population std (0 when every score of the request is equal) and ``percentile``,
the ascending percent rank ``(r_min - 1) / (n - 1)`` (0 for a one-item request).
``r_o`` is 1 plus the number of items of the request with a strictly higher ``p_o`` (SQL
``rank()`` descending): tied items share a rank.

Scaling every weight by ``c > 0`` scales every fused score by ``c`` and so keeps every
request's order; :meth:`Formula.normalized` puts the weights on the simplex.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import FormulaError
from .metrics import combine_rows, weight_terms

KINDS: tuple[str, ...] = ("sum", "product", "rank")
TRANSFORMS: tuple[str, ...] = ("identity", "log", "minmax", "zscore", "percentile")
WITHIN_REQUEST_TRANSFORMS: tuple[str, ...] = ("minmax", "zscore", "percentile")
DEFAULT_ALPHA = 0.0
DEFAULT_K = 60.0
# SQL words that cannot stand unquoted as a column name in the common dialects.
_SQL_RESERVED = frozenset(
    "all and any as asc between by case cast collate column create cross current_date default "
    "desc distinct else end except false fetch for from full grant group having in inner "
    "intersect into is join lateral left like limit natural not null offset on or order outer "
    "over partition range rank right row rows select some table then to true union unique "
    "user using values when where window with".split()
)
_PLAIN_SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _is_objective_name(name: Any) -> bool:
    # Same rule as schema.Objective: ASCII letters, digits and '_', not starting with a digit.
    return isinstance(name, str) and name.isascii() and name.isidentifier()


def _example(items: Sequence[tuple[str, Any]]) -> str:
    name, value = items[0]
    return f"{name!r}: {value!r}"


def _as_float(field: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise FormulaError(f"{field}: the value of {name!r} must be a number, got {value!r}")
    return float(value)


def _float_mapping(field: str, values: Any) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise FormulaError(
            f"{field} must map objective names to numbers, got {type(values).__name__}"
        )
    bad_names = [(str(n), v) for n, v in values.items() if not _is_objective_name(n)]
    if bad_names:
        raise FormulaError(
            f"{field}: {len(bad_names)} objective name(s) are not valid (letters, digits and "
            f"'_', not starting with a digit), e.g. {bad_names[0][0]!r}"
        )
    converted = {name: _as_float(field, name, value) for name, value in values.items()}
    not_finite = [(n, v) for n, v in converted.items() if not math.isfinite(v)]
    if not_finite:
        raise FormulaError(
            f"{field}: {len(not_finite)} value(s) are NaN or infinite, e.g. {_example(not_finite)}"
        )
    return converted


@dataclasses.dataclass(frozen=True)
class Formula:
    """A fusion formula: kind, per-objective weights and the kind's parameters.

    Build one with :meth:`sum`, :meth:`product`, :meth:`rank` or :meth:`of`; every
    constructor validates (``FormulaError`` naming the field, how many values are bad and
    one example).

    Attributes
    ----------
    kind : {"sum", "product", "rank"}
    weights : dict of str -> float
        Finite, ``>= 0``, at least one ``> 0``. Objectives of the logs not named here have
        weight 0.
    alphas : dict of str -> float
        ``product``: one per objective of ``weights`` (default 0.0), the feature is
        ``log(p + alpha)``. ``sum``: one per objective whose transform is ``log``. Empty for
        ``rank``.
    transforms : dict of str -> str
        ``sum`` only: one of ``identity``, ``log``, ``minmax``, ``zscore``, ``percentile`` per
        objective (default ``identity``). Empty for the other kinds.
    k : float or None
        ``rank`` only: the offset in ``1 / (r + k)`` (default 60, > 0).
    """

    kind: str
    weights: dict[str, float]
    alphas: dict[str, float] = dataclasses.field(default_factory=dict)
    transforms: dict[str, str] = dataclasses.field(default_factory=dict)
    k: float | None = None

    # --- construction and validation -----------------------------------------------------
    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FormulaError(f"kind: {self.kind!r} is not one of {list(KINDS)}")
        weights = _float_mapping("weights", self.weights)
        if not weights:
            raise FormulaError("weights: no objective given; name at least one with a weight > 0")
        negative = [(n, w) for n, w in weights.items() if w < 0]
        if negative:
            raise FormulaError(
                f"weights: {len(negative)} value(s) are negative, e.g. {_example(negative)}; "
                "weights must be >= 0"
            )
        if not any(w > 0 for w in weights.values()):
            raise FormulaError(
                f"weights: all {len(weights)} weight(s) are 0, e.g. "
                f"{_example(list(weights.items()))}; at least one must be > 0"
            )
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "transforms", self._checked_transforms())
        object.__setattr__(self, "alphas", self._checked_alphas())
        object.__setattr__(self, "k", self._checked_k())

    def _unknown_names(self, field: str, names: Any) -> None:
        unknown = [n for n in names if n not in self.weights]
        if unknown:
            raise FormulaError(
                f"{field}: {len(unknown)} objective(s) have no weight, e.g. {unknown[0]!r}; "
                f"the formula weighs {list(self.weights)}"
            )

    def _checked_transforms(self) -> dict[str, str]:
        given = self.transforms if self.transforms is not None else {}
        if not isinstance(given, Mapping):
            raise FormulaError(
                "transforms must map objective names to transform names, got "
                f"{type(given).__name__}"
            )
        if self.kind != "sum":
            if given:
                raise FormulaError(
                    f"transforms: only 'sum' formulas take transforms, this one is {self.kind!r}"
                )
            return {}
        self._unknown_names("transforms", given)
        unknown = [(n, t) for n, t in given.items() if t not in TRANSFORMS]
        if unknown:
            raise FormulaError(
                f"transforms: {len(unknown)} unknown transform(s), e.g. {_example(unknown)}; "
                f"known: {list(TRANSFORMS)}"
            )
        return {name: str(given.get(name, "identity")) for name in self.weights}

    def _checked_alphas(self) -> dict[str, float]:
        given = _float_mapping("alphas", self.alphas if self.alphas is not None else {})
        self._unknown_names("alphas", given)
        if self.kind == "product":
            logged = list(self.weights)
        elif self.kind == "sum":
            logged = [n for n, t in self.transforms.items() if t == "log"]
        else:
            logged = []
        unused = [n for n in given if n not in logged]
        if unused:
            where = (
                "'rank' formulas take no alphas" if self.kind == "rank"
                else "alphas apply only to objectives with the 'log' transform"
            )
            raise FormulaError(
                f"alphas: {len(unused)} alpha(s) would be ignored, e.g. {unused[0]!r}: {where}"
            )
        return {name: given.get(name, DEFAULT_ALPHA) for name in logged}

    def _checked_k(self) -> float | None:
        if self.kind != "rank":
            if self.k is not None:
                raise FormulaError(f"k: only 'rank' formulas take k, this one is {self.kind!r}")
            return None
        k = DEFAULT_K if self.k is None else _as_float("k", "k", self.k)
        if not math.isfinite(k) or k <= 0:
            raise FormulaError(f"k: must be finite and > 0, got {k!r}")
        return k

    def __hash__(self) -> int:
        # Sorted: equality of dicts ignores their order, so the hash must too.
        return hash((self.kind, tuple(sorted(self.weights.items())),
                     tuple(sorted(self.alphas.items())), tuple(sorted(self.transforms.items())),
                     self.k))

    @classmethod
    def sum(cls, weights: Mapping[str, float], transforms: Mapping[str, str] | None = None,
            alphas: Mapping[str, float] | None = None) -> Formula:
        """``sum_o w_o * T_o(p_o)``; ``transforms`` default to ``identity``.

        Examples
        --------
        >>> f = Formula.sum({"click": 0.7, "dwell": 0.3}, transforms={"dwell": "percentile"})
        >>> f.to_python()
        '0.7 * click + 0.3 * ((dwell[:, None] > dwell).sum(axis=1) / max(dwell.size - 1, 1))'
        """
        return cls("sum", weights, alphas=alphas or {}, transforms=transforms or {})

    @classmethod
    def product(cls, weights: Mapping[str, float],
                alphas: Mapping[str, float] | None = None) -> Formula:
        """``prod_o (p_o + alpha_o) ** w_o``, evaluated as ``sum_o w_o log(p_o + alpha_o)``.

        The log form ranks every request the same way and is what :meth:`fuse` returns.

        ``alphas`` default to 0.0: a score of 0 then makes the log undefined, which
        :meth:`validate_for` reports with a suggested alpha.
        """
        return cls("product", weights, alphas=alphas or {})

    @classmethod
    def rank(cls, weights: Mapping[str, float], k: float = DEFAULT_K) -> Formula:
        """``sum_o w_o / (r_o + k)``, ``r_o`` the 1-based rank by ``p_o`` in the request.

        Tied scores share the best rank of their run (SQL ``rank()``).
        """
        return cls("rank", weights, k=k)

    @classmethod
    def of(cls, kind: str, weights: Mapping[str, float], *,
           alphas: Mapping[str, float] | None = None,
           transforms: Mapping[str, str] | None = None, k: float | None = None) -> Formula:
        """A formula of any ``kind``; parameters the kind does not take must be None or empty."""
        return cls(kind, weights, alphas=alphas or {}, transforms=transforms or {}, k=k)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form; :meth:`from_dict` rebuilds an equal formula."""
        out: dict[str, Any] = {"kind": self.kind, "weights": dict(self.weights)}
        if self.kind == "product" or self.alphas:
            out["alphas"] = dict(self.alphas)
        if self.kind == "sum":
            out["transforms"] = dict(self.transforms)
        if self.kind == "rank":
            out["k"] = self.k
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Formula:
        """Rebuild (and validate) a formula from :meth:`to_dict` output."""
        if not isinstance(data, Mapping):
            raise FormulaError(f"a formula must be a mapping, got {type(data).__name__}")
        known = {"kind", "weights", "alphas", "transforms", "k"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FormulaError(
                f"formula: {len(unknown)} unknown field(s), e.g. {unknown[0]!r}; "
                f"known: {sorted(known)}"
            )
        for field in ("kind", "weights"):
            if field not in data:
                raise FormulaError(f"formula: field {field!r} is missing")
        return cls(data["kind"], data["weights"], alphas=data.get("alphas") or {},
                   transforms=data.get("transforms") or {}, k=data.get("k"))

    # --- derived formulas ----------------------------------------------------------------
    @property
    def objectives(self) -> tuple[str, ...]:
        """Objectives the formula names (in the order given), weighted or not."""
        return tuple(self.weights)

    def normalized(self) -> Formula:
        """The same formula with weights divided by their sum (same order in every request)."""
        total = math.fsum(self.weights.values())
        return dataclasses.replace(self, weights={n: w / total for n, w in self.weights.items()})

    def weight_vector(self, objectives: Sequence[str]) -> np.ndarray:
        """Weights as float64 ``(m,)`` in ``objectives`` order (0 for objectives not named)."""
        self._check_objectives_known(objectives)
        return np.array([self.weights.get(name, 0.0) for name in objectives], dtype=np.float64)

    # --- validation against logs ---------------------------------------------------------
    def _check_objectives_known(self, objectives: Sequence[str]) -> None:
        unknown = [n for n in self.weights if n not in objectives]
        if unknown:
            raise FormulaError(
                f"weights: {len(unknown)} objective(s) not in the logs, e.g. {unknown[0]!r}; "
                f"the logs have {list(objectives)}"
            )

    def _logged(self) -> dict[str, float]:
        """Weighted objectives whose feature is ``log(p + alpha)``, with their alpha."""
        return {n: a for n, a in self.alphas.items() if self.weights[n] > 0}

    def validate_for(self, logs: Any) -> None:
        """Raise FormulaError if the formula cannot be evaluated on ``logs``.

        Checks that every objective the formula names is in the logs and that
        ``score + alpha > 0`` on every row for each weighted objective whose feature is a log
        (``product``, and ``sum`` with the ``log`` transform). Costs one pass over those
        score columns.
        """
        self._check_objectives_known(logs.objectives)
        for name, alpha in self._logged().items():
            j = logs.objectives.index(name)
            problem = _log_domain_problem(logs.scores[:, j], alpha)
            if problem is not None:
                count, row, minimum = problem
                request = int(np.searchsorted(logs.group_offsets, row, side="right") - 1)
                example = (f"request {logs.request_id(request)!r} has score "
                           f"{float(logs.scores[row, j])!r}")
                raise FormulaError(_log_domain_message(name, alpha, count, minimum, example))

    # --- computation ---------------------------------------------------------------------
    def features(self, scores: np.ndarray, group_offsets: np.ndarray,
                 objectives: Sequence[str]) -> np.ndarray:
        """Per-objective features ``X`` such that the fused score is ``X @ w``.

        Parameters
        ----------
        scores : ndarray, shape (rows, m)
            Scores of whole requests (e.g. a chunk of a LogSet), columns in ``objectives``
            order.
        group_offsets : ndarray of int64, shape (requests + 1,)
            Request boundaries within ``scores``: ``group_offsets[0] == 0`` and
            ``group_offsets[-1] == rows``; every request has at least one row.
        objectives : sequence of str, length m

        Returns
        -------
        ndarray of float64, shape (rows, m)
            Columns of objectives with weight 0 are 0: they add nothing, and skipping them
            keeps ``0 * log(0)`` from turning into NaN.

        Raises
        ------
        FormulaError
            An objective of the formula is not in ``objectives``, or ``score + alpha <= 0``
            where a log is taken.
        """
        scores = np.asarray(scores)
        group_offsets = np.asarray(group_offsets, dtype=np.int64)
        if scores.ndim != 2 or scores.shape[1] != len(objectives):
            raise FormulaError(
                f"scores must be (rows, {len(objectives)}) for objectives {list(objectives)}, "
                f"got shape {scores.shape}"
            )
        if group_offsets[0] != 0 or group_offsets[-1] != scores.shape[0]:
            raise FormulaError(
                f"group_offsets must run from 0 to {scores.shape[0]} (the rows of scores), "
                f"got {int(group_offsets[0])}..{int(group_offsets[-1])}"
            )
        self._check_objectives_known(objectives)
        out = np.zeros(scores.shape, dtype=np.float64)
        groups = _Groups(group_offsets)
        for j, name in enumerate(objectives):
            if self.weights.get(name, 0.0) > 0:
                out[:, j] = self._feature(name, scores[:, j].astype(np.float64), groups)
        return out

    def _feature(self, name: str, p: np.ndarray, groups: _Groups) -> np.ndarray:
        if self.kind == "rank":
            return 1.0 / (groups.rank_desc(p) + self.k)
        transform = "log" if self.kind == "product" else self.transforms[name]
        if transform == "identity":
            return p
        if transform == "log":
            alpha = self.alphas[name]
            problem = _log_domain_problem(p, alpha)
            if problem is not None:
                count, row, minimum = problem
                raise FormulaError(_log_domain_message(name, alpha, count, minimum,
                                                       f"row {row} has score {p[row]!r}"))
            return np.log(p + alpha)
        if transform == "minmax":
            low, high = groups.per_row(np.minimum, p), groups.per_row(np.maximum, p)
            span = high - low
            return np.divide(p - low, span, out=np.zeros_like(p), where=span > 0)
        if transform == "zscore":
            constant = groups.per_row(np.maximum, p) == groups.per_row(np.minimum, p)
            mean = groups.per_row(np.add, p) / groups.sizes_per_row
            centred = p - mean
            std = np.sqrt(groups.per_row(np.add, centred * centred) / groups.sizes_per_row)
            # Equal scores can leave a rounding residue in p - mean; max == min is exact.
            return np.divide(centred, std, out=np.zeros_like(p), where=~constant)
        # percentile: ascending percent rank, 0 for one-item requests
        below = groups.count_below(p)
        return np.divide(below, groups.sizes_per_row - 1, out=np.zeros_like(p),
                         where=groups.sizes_per_row > 1)

    def fuse(self, logs: Any, *, chunk_rows: int = 262_144) -> np.ndarray:
        """Fused score of every row of ``logs``, float64 ``(rows,)``.

        Validates first (:meth:`validate_for`), then works on chunks of whole requests of
        about ``chunk_rows`` rows so the feature matrix stays small.
        """
        self.validate_for(logs)
        weights = self.weight_vector(logs.objectives)
        out = np.empty(logs.n_rows, dtype=np.float64)
        for start, stop, offsets in group_chunks(logs.group_offsets, chunk_rows):
            features = self.features(logs.scores[start:stop], offsets, logs.objectives)
            out[start:stop] = combine(features, weights)
        return out

    # --- rendering -----------------------------------------------------------------------
    def to_sql(self, score_columns: Mapping[str, str] | None = None,
               request_column: str = "request_id") -> str:
        """A SQL expression computing the fused score over the score columns.

        Parameters
        ----------
        score_columns : mapping of objective -> column name, optional
            Default ``pred_<objective>``. Names that are not plain lower-case identifiers, or
            are SQL keywords, are double-quoted.
        request_column : str
            Partition of the window functions (within-request transforms, ranks).

        Returns
        -------
        str
            Standard SQL (window functions, ``ln``, ``nullif``, ``percent_rank``, ``rank``);
            checked against DuckDB. Terms of zero weight are left out. ``product`` renders the
            log of the product, which orders every request the same way and equals
            :meth:`fuse`.
        """
        columns = self._columns(score_columns, "score_columns")
        partition = f"PARTITION BY {_sql_name(request_column)}"
        terms = []
        for name, weight in self.weights.items():
            if weight > 0:
                feature = self._sql_feature(name, _sql_name(columns[name]), partition)
                terms.append(f"{_number(weight)} * {feature}")
        return " + ".join(terms)

    def _sql_feature(self, name: str, p: str, partition: str) -> str:
        if self.kind == "rank":
            return f"(1 / (rank() OVER ({partition} ORDER BY {p} DESC) + {_number(self.k)}))"
        transform = "log" if self.kind == "product" else self.transforms[name]
        whole = f"OVER ({partition})"
        if transform == "identity":
            return p
        if transform == "log":
            return f"ln({_plus_alpha(p, self.alphas[name])})"
        if transform == "minmax":
            return (f"coalesce(({p} - min({p}) {whole}) / "
                    f"nullif(max({p}) {whole} - min({p}) {whole}, 0), 0)")
        if transform == "zscore":
            return (f"(CASE WHEN max({p}) {whole} = min({p}) {whole} THEN 0 "
                    f"ELSE ({p} - avg({p}) {whole}) / stddev_pop({p}) {whole} END)")
        return f"percent_rank() OVER ({partition} ORDER BY {p})"

    def to_python(self) -> str:
        """A Python expression computing the fused score of one request.

        The expression reads one 1-D float array per weighted objective, named by the
        objective and holding the scores of a single request, and ``np`` (numpy). It equals
        :meth:`fuse` on that request (up to rounding). Terms of zero weight are left out.
        """
        if "np" in self.weights:
            raise FormulaError("to_python: an objective named 'np' would hide numpy; rename it")
        terms = []
        for name, weight in self.weights.items():
            if weight > 0:
                terms.append(f"{_number(weight)} * {self._python_feature(name)}")
        return " + ".join(terms)

    def _python_feature(self, p: str) -> str:
        if self.kind == "rank":
            # r = 1 + number of strictly higher scores (ties share the best rank)
            return f"(1 / (1 + ({p}[:, None] < {p}).sum(axis=1) + {_number(self.k)}))"
        transform = "log" if self.kind == "product" else self.transforms[p]
        if transform == "identity":
            return p
        if transform == "log":
            return f"np.log({_plus_alpha(p, self.alphas[p])})"
        if transform == "minmax":
            return (f"np.divide({p} - {p}.min(), {p}.max() - {p}.min(), "
                    f"out=np.zeros({p}.shape), where={p}.max() > {p}.min())")
        if transform == "zscore":
            return (f"np.divide({p} - {p}.mean(), {p}.std(), "
                    f"out=np.zeros({p}.shape), where={p}.max() > {p}.min())")
        return f"(({p}[:, None] > {p}).sum(axis=1) / max({p}.size - 1, 1))"

    def _columns(self, mapping: Mapping[str, str] | None, field: str) -> dict[str, str]:
        mapping = {} if mapping is None else mapping
        columns = {n: mapping.get(n, f"pred_{n}") for n in self.weights}
        bad = [(n, c) for n, c in columns.items() if not isinstance(c, str) or not c]
        if bad:
            raise FormulaError(
                f"{field}: {len(bad)} column name(s) are not non-empty strings, e.g. "
                f"{_example(bad)}"
            )
        return columns


# --- helpers shared with evaluate ----------------------------------------------------------
def alpha_objectives(kind: str, objectives: Sequence[str],
                     transforms: Mapping[str, str] | None = None) -> list[str]:
    """The objectives whose feature is ``log(score + alpha)`` in a formula of ``kind``: all
    of them for ``product``, those with the ``log`` transform for ``sum``, none for ``rank``."""
    if kind == "product":
        return list(objectives)
    if kind == "sum":
        return [o for o in objectives if (transforms or {}).get(o) == "log"]
    return []


def default_alphas(logs: Any, kind: str = "product",
                   transforms: Mapping[str, str] | None = None) -> dict[str, float]:
    """The alphas a formula of ``kind`` takes on ``logs`` where none is given.

    0 (the plain log) where every score of the objective is > 0. Where scores reach 0 or
    below, just enough to make ``log(score + alpha)`` defined on every row: ``1 - min`` for
    a graded objective (dwell seconds from 0 become ``log(1 + seconds)``, the scale of the
    NDCG gain) and ``1e-6 - min`` for a binary one.

    Examples
    --------
    On the bundled sample, whose dwell predictions reach 0 seconds:
    ``default_alphas(logs)`` is ``{"click": 0.0, "dwell": 1.0, "like": 0.0, "conversion": 0.0}``.
    """
    alphas = {}
    for name in alpha_objectives(kind, logs.objectives, transforms):
        lowest = float(logs.scores[:, logs.objective_index(name)].min())
        margin = 1.0 if logs.schema.objective(name).kind == "graded" else 1e-6
        alphas[name] = 0.0 if lowest > 0 else margin - lowest
    return alphas


def combine(features: np.ndarray, weights: np.ndarray, out: np.ndarray | None = None
            ) -> np.ndarray:
    """Fused scores ``features @ weights.T``, accumulated objective by objective.

    Parameters
    ----------
    features : ndarray of float64, shape (rows, m)
    weights : ndarray of float64, shape (m,) or (candidates, m)
    out : ndarray of float64, shape (rows,) or (candidates, rows), optional
        Where to write the result (e.g. rows of a larger fused matrix).

    Returns
    -------
    ndarray of float64, shape (rows,) or (candidates, rows)

    Notes
    -----
    NOTE: not BLAS. A BLAS product may round identical rows differently (different
    kernels for edge tiles), which would break ties by row position; summing
    ``w_j * x_j`` in objective order gives every row, and every candidate, the same
    arithmetic, so one formula fused alone or among many candidates gives the same bits.
    It is the metric kernel's own fusion (:func:`fusion.metrics.combined_metric_sums`), so
    metrics of these scores equal the kernel's to the bit. Each candidate skips its zero
    weights (adding ``0 * x`` changes no comparison, and would make an infinite ``x`` NaN).
    """
    features = np.ascontiguousarray(features, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    matrix = np.atleast_2d(weights)
    rows, m = features.shape
    shape = (rows,) if weights.ndim == 1 else (matrix.shape[0], rows)
    direct = out is not None and out.flags.c_contiguous and out.dtype == np.float64
    result = out if direct else np.empty(shape)
    combine_rows(features.reshape(-1), m, 1, *weight_terms(matrix),
                 result.reshape(matrix.shape[0], rows))
    if out is None:
        return result
    if result is not out:
        out[...] = result.reshape(out.shape)
    return out


def group_chunks(group_offsets: np.ndarray, max_rows: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Split requests into chunks of whole requests of about ``max_rows`` rows.

    Yields ``(row_start, row_stop, chunk_offsets)`` with ``chunk_offsets`` the request
    boundaries relative to ``row_start``. A request longer than ``max_rows`` is a chunk on
    its own.
    """
    group_offsets = np.asarray(group_offsets, dtype=np.int64)
    n_groups = group_offsets.shape[0] - 1
    first = 0
    while first < n_groups:
        start = int(group_offsets[first])
        last = int(np.searchsorted(group_offsets, start + max_rows, side="right")) - 1
        last = min(max(last, first + 1), n_groups)
        yield start, int(group_offsets[last]), group_offsets[first:last + 1] - start
        first = last


class _Groups:
    """Per-request reductions and ranks for rows ordered by request (vectorised numpy)."""

    def __init__(self, group_offsets: np.ndarray) -> None:
        self.starts = group_offsets[:-1]
        self.sizes = np.diff(group_offsets)
        self.ids = np.repeat(np.arange(self.sizes.shape[0]), self.sizes)
        self.sizes_per_row = self.sizes[self.ids].astype(np.float64)
        self.ends_per_row = group_offsets[1:][self.ids]
        self.starts_per_row = self.starts[self.ids]

    def per_row(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        """``ufunc`` reduced over each request, repeated on each of its rows."""
        if values.shape[0] == 0:
            return values
        return ufunc.reduceat(values, self.starts)[self.ids]

    def _ties(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Sorted ascending within each request; for each row, the sorted positions of the
        # first and last rows of its run of equal scores.
        n = values.shape[0]
        new_run = np.ones(n, dtype=bool)
        narrow = values.astype(np.float32)
        if n and self.sizes.shape[0] < 2**31 and np.array_equal(narrow, values):
            # NOTE: scores are float32 in a LogSet, so one int64 sort replaces lexsort's two:
            # the request in the high 32 bits, the float32 bits mapped to an order-preserving
            # unsigned int in the low 32 (+ 0 turns -0.0 into +0.0, which compare equal).
            bits = (narrow + np.float32(0)).view(np.uint32)
            monotone = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
            key = (self.ids.astype(np.int64) << 32) | monotone.astype(np.int64)
            order = np.argsort(key)
            ordered = key[order]
            new_run[1:] = ordered[1:] != ordered[:-1]
        else:
            order = np.lexsort((values, self.ids))
            ordered, ids = values[order], self.ids[order]
            new_run[1:] = (ordered[1:] != ordered[:-1]) | (ids[1:] != ids[:-1])
        run_starts = np.flatnonzero(new_run)
        run_ends = np.append(run_starts[1:], n) - 1
        run = np.cumsum(new_run) - 1
        first, last = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        first[order] = run_starts[run]
        last[order] = run_ends[run]
        return first, last

    def rank_desc(self, values: np.ndarray) -> np.ndarray:
        """1 + number of rows of the same request with a strictly higher value (float64)."""
        _, last = self._ties(values)
        return (self.ends_per_row - last).astype(np.float64)

    def count_below(self, values: np.ndarray) -> np.ndarray:
        """Number of rows of the same request with a strictly lower value (float64)."""
        first, _ = self._ties(values)
        return (first - self.starts_per_row).astype(np.float64)


def _log_domain_problem(scores: np.ndarray, alpha: float) -> tuple[int, int, float] | None:
    """(count, first row, smallest score) where ``score + alpha <= 0``, or None."""
    shifted = scores.astype(np.float64) + alpha
    bad = shifted <= 0
    count = int(np.count_nonzero(bad))
    if not count:
        return None
    return count, int(np.argmax(bad)), float(scores.min())


def _log_domain_message(name: str, alpha: float, count: int, minimum: float, example: str) -> str:
    bound = -minimum + 0.0  # + 0.0 turns -0.0 into 0.0
    # A round number just above the bound: 1e-6 above 0, else the bound rounded up to 3 digits.
    suggested = 1e-6 if bound == 0 else bound + abs(bound) * 1e-3
    if bound != 0:
        step = 10.0 ** (math.floor(math.log10(abs(suggested))) - 2)
        suggested = float(f"{math.ceil(suggested / step) * step:.3g}")
    return (
        f"alphas: objective {name!r}: {count} row(s) have score + alpha <= 0 with alpha = "
        f"{alpha!r}, so log(score + alpha) is undefined there; e.g. {example}. Use an alpha > "
        f"{bound!r}, e.g. alphas={{{name!r}: {suggested!r}}}"
    )


def _number(value: float) -> str:
    # Shortest text that reads back as the same float (also valid SQL).
    return repr(float(value))


def _plus_alpha(p: str, alpha: float) -> str:
    if alpha == 0:
        return p
    return f"{p} + {_number(alpha)}" if alpha > 0 else f"{p} - {_number(-alpha)}"


def _sql_name(name: str) -> str:
    if _PLAIN_SQL_NAME.match(name) and name not in _SQL_RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'

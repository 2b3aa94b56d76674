"""Errors raised for bad input.

Every error the library raises on purpose derives from :class:`FusionError`, so callers
(the CLI, the dashboard) can catch one type and show its message. Messages name the
column or field, how many rows or values are bad, and one example.
"""

from __future__ import annotations


class FusionError(ValueError):
    """Base class of every error Fusion Tuner raises for bad input."""


# --- sources and schema -------------------------------------------------------------------
class SourceError(FusionError):
    """A log source cannot be found or read as a table."""


class SchemaError(FusionError):
    """The columns of a log do not fit the schema (or no schema can be detected)."""


class MissingColumnError(SchemaError):
    """A column named by the schema, a filter or a formula is not in the source."""


class NoObjectivesError(SchemaError):
    """No objective (a score column paired with a label column) was found."""


class ColumnTypeError(SchemaError):
    """A column has the wrong type, e.g. text where numbers are expected."""


# --- values -------------------------------------------------------------------------------
class InvalidValueError(FusionError):
    """Values are out of their allowed range: NaN/inf, probabilities outside [0, 1], negative labels."""


class EmptyLogsError(FusionError):
    """The source, or what the filters left of it, has no rows."""


class FilterError(FusionError):
    """A slice filter is malformed: unknown column or operator, or a value of the wrong type."""


# --- formulas, metrics, search ------------------------------------------------------------
class FormulaError(FusionError):
    """A fusion formula is malformed: unknown objective, negative or NaN weight, bad alpha."""


class MetricError(FusionError):
    """A metric name is unknown or malformed (e.g. ``ndcg@0``)."""


class SearchError(FusionError):
    """Search settings are malformed: bad budget, method, bounds or constraint."""


class StudyError(FusionError):
    """A study file cannot be opened, or belongs to other logs or other settings."""


class ConfigError(FusionError):
    """A fusion config file is malformed or does not fit the logs it is applied to."""

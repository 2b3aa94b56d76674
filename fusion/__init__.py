"""Fusion Tuner: tune how a recommender fuses per-objective predictions into one ranking score."""

from .errors import (
    ColumnTypeError,
    ConfigError,
    EmptyLogsError,
    FilterError,
    FormulaError,
    FusionError,
    InvalidValueError,
    MetricError,
    MissingColumnError,
    NoObjectivesError,
    SchemaError,
    SearchError,
    SourceError,
    StudyError,
)
from .logs import LogSet, load_logs
from .schema import Objective, Schema

__version__ = "0.1.0"

__all__ = [
    "ColumnTypeError",
    "ConfigError",
    "EmptyLogsError",
    "FilterError",
    "FormulaError",
    "FusionError",
    "InvalidValueError",
    "LogSet",
    "MetricError",
    "MissingColumnError",
    "NoObjectivesError",
    "Objective",
    "Schema",
    "SchemaError",
    "SearchError",
    "SourceError",
    "StudyError",
    "__version__",
    "load_logs",
]

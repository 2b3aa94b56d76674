"""Fusion Tuner: tune how a recommender fuses per-objective predictions into one ranking score.

The public surface (see README.md): load logs, build a fusion formula, evaluate it with
per-request ranking metrics, search weights for the Pareto front, export a config.
"""

__version__ = "0.1.0"

from .config import FusionConfig, export_config, load_config, stored_formula, write_config
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
from .evaluate import EvaluationResult, evaluate, evaluate_many
from .formulas import Formula
from .logs import LogSet, describe_source, load_logs
from .schema import Objective, Schema
from .search import search
from .study import SearchResult, open_study

__all__ = [
    "ColumnTypeError",
    "ConfigError",
    "EmptyLogsError",
    "EvaluationResult",
    "FilterError",
    "Formula",
    "FormulaError",
    "FusionConfig",
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
    "SearchResult",
    "SourceError",
    "StudyError",
    "__version__",
    "describe_source",
    "evaluate",
    "evaluate_many",
    "export_config",
    "load_config",
    "load_logs",
    "open_study",
    "search",
    "stored_formula",
    "write_config",
]

"""The command line: ``python -m fusion {sample,evaluate,search,front,export,bench} ...``.

Every subcommand is a thin layer over the library: parse and check the arguments, call
:mod:`fusion`, print a table. Bad arguments and errors the library raises for bad input
(:class:`fusion.FusionError`) print one line on stderr and exit with status 2, without a
traceback. ``main(argv)`` returns the exit status, so tests drive it in-process.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import pandas as pd

from .config import CONFIG_SUFFIXES, FusionConfig, export_config, load_config, stored_formula
from .errors import FusionError, StudyError
from .evaluate import DEFAULT_METRICS, GROUP_BY, evaluate
from .formulas import KINDS, TRANSFORMS, Formula, default_alphas
from .logs import Filter, LogSet, load_logs
from .metrics import parse_metric
from .search import METHODS, parse_constraint, search
from .study import open_study

PROG = "python -m fusion"
BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
CANDIDATE_ALIASES: tuple[str, ...] = ("knee", "preferred")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_COLUMN = rf"{_NAME}(:[a-z]+(@\d+)?)?"  # an objective, or an objective:metric column
_COMPARISON = re.compile(r"^\s*([^\s=!<>]+)\s*(==|!=|<=|>=|<|>)\s*(.*?)\s*$")
_MEMBERSHIP = re.compile(r"^\s*(\S+)\s+(not\s+in|in)\s+(.*?)\s*$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


# --- argument types (each raises ArgumentTypeError: argparse turns it into one line) ---------
def parse_assignments(text: str, *, what: str = "weights", key: str = _NAME) -> dict[str, str]:
    """``"click=0.5,dwell=0.3"`` -> ``{"click": "0.5", "dwell": "0.3"}`` (values unparsed).

    ``key`` is the regular expression a name must match (default: an objective name).
    """
    pairs: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not re.fullmatch(key, name) or not value:
            raise argparse.ArgumentTypeError(
                f"malformed {what} {part.strip()!r} in {text!r}: use name=value pairs separated "
                "by commas, e.g. click=0.5,dwell=0.3"
            )
        if name in pairs:
            raise argparse.ArgumentTypeError(
                f"{what}: objective {name!r} is given twice in {text!r}")
        pairs[name] = value
    return pairs


def parse_numbers(text: str, *, what: str, key: str = _NAME) -> dict[str, float]:
    """``"click=0.5,dwell=0.3"`` -> ``{"click": 0.5, "dwell": 0.3}``; finite numbers only."""
    numbers = {}
    for name, value in parse_assignments(text, what=what, key=key).items():
        if not _FLOAT.match(value):
            raise argparse.ArgumentTypeError(
                f"{what}: the value of {name!r} must be a number, got {value!r}"
            )
        numbers[name] = float(value)
    return numbers


def _weights(text: str) -> dict[str, float]:
    weights = parse_numbers(text, what="weights")
    negative = [(n, w) for n, w in weights.items() if w < 0]
    if negative:
        raise argparse.ArgumentTypeError(
            f"weights: {len(negative)} weight(s) are negative, e.g. "
            f"{negative[0][0]}={negative[0][1]!r}"
        )
    return weights


def _alphas(text: str) -> dict[str, float]:
    return parse_numbers(text, what="alphas")


def _transforms(text: str) -> dict[str, str]:
    transforms = parse_assignments(text, what="transforms")
    unknown = [(n, t) for n, t in transforms.items() if t not in TRANSFORMS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"transforms: {len(unknown)} unknown transform(s), e.g. "
            f"{unknown[0][0]}={unknown[0][1]}; "
            f"use one of {', '.join(TRANSFORMS)}"
        )
    return transforms


def _metric_name(text: str) -> str:
    try:
        return str(parse_metric(text))
    except FusionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _metric_list(text: str) -> list[str]:
    names = [_metric_name(part.strip()) for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no metric in {text!r}; e.g. gauc,ndcg@10,top@10")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"metric {repeated[0]!r} is given twice in {text!r}")
    return names


def parse_objectives(text: str) -> list[tuple[str, str]]:
    """``"click:gauc,dwell:ndcg@10"`` -> ``[("click", "gauc"), ("dwell", "ndcg@10")]``."""
    objectives = []
    for part in text.split(","):
        name, sep, metric = (s.strip() for s in part.partition(":"))
        if not sep or not re.fullmatch(_NAME, name) or not metric:
            raise argparse.ArgumentTypeError(
                f"malformed objective {part.strip()!r} in {text!r}: use objective:metric pairs "
                "separated by commas, e.g. click:gauc,dwell:ndcg@10"
            )
        objectives.append((name, _metric_name(metric)))
    repeated = sorted({o for o in objectives if objectives.count(o) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{':'.join(repeated[0])} is given twice in {text!r}")
    return objectives


def _constraint(text: str) -> str:
    # Checked before the logs load (which can take a while); whether the objective exists
    # in the logs is left to the search.
    try:
        parse_constraint(text, [text.partition(":")[0].strip()])
    except FusionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _preference(text: str) -> dict[str, float]:
    return parse_numbers(text, what="preference", key=_COLUMN)


def parse_value(text: str) -> Any:
    """A filter value: int or float when it reads as one, else the text (quotes stripped)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def parse_where(text: str) -> Filter:
    """``"surface==feed"``, ``"n>=3"``, ``"segment in new,casual"`` -> a load_logs filter."""
    membership = _MEMBERSHIP.match(text)
    if membership:
        column, op, values = membership.groups()
        items = [v.strip() for v in values.split(",")]
        if not all(items):
            raise argparse.ArgumentTypeError(
                f"malformed filter {text!r}: 'in' takes values separated by commas, "
                "e.g. 'surface in feed,search'"
            )
        return (column, "not_in" if op.startswith("not") else "in", [parse_value(v) for v in items])
    comparison = _COMPARISON.match(text)
    if comparison is None or not comparison.group(3) or comparison.group(3)[0] in "=!<>":
        raise argparse.ArgumentTypeError(
            f"malformed filter {text!r}: use column==value, column!=value, <, <=, >, >= or "
            "'column in a,b,c', e.g. 'surface==feed'"
        )
    column, op, value = comparison.groups()
    return (column, op, parse_value(value))


def _positive_int(text: str) -> int:
    if not _INT.match(text.strip()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not _INT.match(text.strip()) or int(text) < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    if not _FLOAT.match(text.strip()) or not float(text) > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return float(text)


def _level(text: str) -> float:
    if not _FLOAT.match(text.strip()) or not 0 < float(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a level in (0, 1) such as 0.95, got {text!r}")
    return float(text)


def _config_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text!r} has an unknown suffix {path.suffix!r}; use one of "
            f"{', '.join(CONFIG_SUFFIXES)}"
        )
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"directory {str(path.parent)!r} does not exist")
    return path


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(
            f"{text!r} does not exist" if not path.exists() else f"{text!r} is not a file"
        )
    return path


# --- parser -------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: no usage block, a pointer to --help instead."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Tune how a recommender fuses per-objective predictions into one ranking "
                    "score.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sample = commands.add_parser("sample", help="write a realistic simulated feed log (Parquet)",
                                 description="Write a simulated feed with predictions to Parquet.")
    sample.add_argument("--rows", type=_positive_int, required=True, help="impressions to write")
    sample.add_argument("--out", type=Path, required=True, help="the Parquet file to write")
    sample.add_argument("--seed", type=_non_negative_int, default=0, help="default 0")
    sample.add_argument("--train-rows", type=_positive_int, default=None, metavar="N",
                        help="rows of the simulated split the prediction models learn from "
                             "(default: the generator's; fewer is faster, predictions worse)")
    sample.set_defaults(run=_run_sample)

    evaluate_ = commands.add_parser(
        "evaluate", help="metrics of one fusion formula on logs",
        description="Print the metrics of a fusion formula, from a config or given by kind and "
                    "weights. With --config, the exported metrics are compared: exit status 1 "
                    "if they do not reproduce on the logs they were exported from.")
    _add_logs_arguments(evaluate_)
    given = evaluate_.add_mutually_exclusive_group(required=True)
    given.add_argument("--config", type=_existing_file, help="an exported config (.json/.yaml)")
    given.add_argument("--weights", type=_weights, metavar="O=W,...",
                       help="e.g. click=0.5,dwell=0.3,like=0.2")
    _add_formula_arguments(evaluate_, kind_default=None)
    evaluate_.add_argument("--metrics", type=_metric_list, metavar="M,...",
                           help=f"e.g. gauc,ndcg@10,top@10 (default: the config's, else "
                                f"{','.join(DEFAULT_METRICS)})")
    evaluate_.add_argument("--baseline", type=_existing_file,
                           help="a config whose formula the deltas compare against "
                                "(default: the config's baseline)")
    evaluate_.add_argument("--group-by", choices=GROUP_BY, default=None,
                           help="groups of the metrics (default: the config's, else request)")
    evaluate_.add_argument("--ci", type=_level, default=None,
                           help="bootstrap confidence level, e.g. 0.95 (resamples groups)")
    evaluate_.add_argument("--n-boot", type=_positive_int, default=200,
                           help="bootstrap replicates (default 200)")
    evaluate_.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate_.set_defaults(run=_run_evaluate)

    search_ = commands.add_parser(
        "search", help="search fusion weights for the Pareto front",
        description="Search weights that maximise several metrics under guardrails. The study "
                    "file keeps every finished batch: rerunning the same command resumes.")
    _add_logs_arguments(search_)
    search_.add_argument("--objectives", type=parse_objectives, required=True,
                         metavar="O:METRIC,...",
                         help="metrics to maximise, e.g. click:gauc,dwell:ndcg@10,conversion:gauc")
    search_.add_argument("--constraint", type=_constraint, action="append", default=[],
                         metavar="EXPR",
                         help="a guardrail such as 'conversion:gauc>=0.995*baseline' (repeatable)")
    search_.add_argument("--budget", type=_positive_int, default=200,
                         help="candidates to evaluate on the full logs (default 200)")
    search_.add_argument("--study", type=Path, help="DuckDB file that persists the search")
    _add_formula_arguments(search_, kind_default="product")
    search_.add_argument("--seed", type=_non_negative_int, default=0, help="default 0")
    search_.add_argument("--method", choices=METHODS, default="auto", help="default auto")
    search_.add_argument("--search-alphas", action="store_true",
                         help="also search the alphas of log features")
    search_.add_argument("--preference", type=_preference, metavar="O=P,...",
                         help="importance of each searched metric for the 'preferred' pick, "
                              "e.g. click=2,dwell=1")
    search_.add_argument("--baseline", type=_existing_file,
                         help="a config with the production formula (default: equal weights)")
    search_.set_defaults(run=_run_search)

    front = commands.add_parser("front", help="print the Pareto front of a saved study",
                                description="Print the feasible non-dominated candidates of a "
                                            "study, its baseline and picks.")
    front.add_argument("study", type=_existing_file, metavar="STUDY", help="a study .duckdb file")
    front.set_defaults(run=_run_front)

    export = commands.add_parser(
        "export", help="export a candidate of a study as a config",
        description="Re-load the study's logs (they must be unchanged), evaluate the candidate "
                    "and write its config with metrics and deltas against the study's baseline.")
    export.add_argument("study", type=_existing_file, metavar="STUDY", help="a study .duckdb file")
    export.add_argument("--candidate", required=True,
                        help="a candidate id, or 'knee' or 'preferred'")
    export.add_argument("--out", type=_config_path, required=True,
                        help="the config to write: .json, .yaml, .yml or .sql")
    export.add_argument("--name", default=None, help="config name (default: the output's stem)")
    export.add_argument("--metrics", type=_metric_list, metavar="M,...",
                        help=f"default {','.join(DEFAULT_METRICS)} plus the study's metrics")
    export.set_defaults(run=_run_export)

    bench = commands.add_parser(
        "bench", help="run the benchmarks under bench/",
        description="Run bench/bench_NAME.py, or all of them, passing the remaining arguments on.")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    bench.add_argument("name", nargs="?", default=None,
                       help="a benchmark (bench_NAME.py) or 'all' (default)")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed on to the benchmark(s)")
    bench.set_defaults(run=_run_bench)
    return parser


def _add_logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logs", metavar="LOGS", help="log file or glob (Parquet, CSV, JSON)")
    parser.add_argument("--schema", type=_existing_file, metavar="YAML",
                        help="YAML column mapping (default: the config's, else pred_<o>/label_<o>)")
    parser.add_argument("--where", type=parse_where, action="append", default=[], metavar="EXPR",
                        help="filter such as 'surface==feed', 'n>=3', 'segment in new,casual' "
                             "(repeatable, ANDed)")
    parser.add_argument("--sample-requests", type=_positive_int, default=None, metavar="N",
                        help="keep this many whole requests, chosen at random")
    parser.add_argument("--sample-seed", type=_non_negative_int, default=0, metavar="SEED",
                        help="default 0")


def _add_formula_arguments(parser: argparse.ArgumentParser, *, kind_default: str | None) -> None:
    parser.add_argument("--kind", choices=KINDS, default=kind_default,
                        help="formula kind (default product)")
    parser.add_argument("--alphas", type=_alphas, metavar="O=A,...",
                        help="alphas of log features (product, sum with log), e.g. dwell=1")
    parser.add_argument("--transforms", type=_transforms, metavar="O=T,...",
                        help=f"sum only, e.g. dwell=percentile ({', '.join(TRANSFORMS)})")
    parser.add_argument("--k", type=_positive_float, help="rank only: the offset in 1/(rank+k)")


# --- entry point --------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 mismatch, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error, already printed on one line
        return int(exc.code or 0)
    try:
        return int(args.run(args))
    except FusionError as exc:
        _fail(str(exc))
    except BrokenPipeError:
        # The reader (e.g. `| head`) stopped reading: not an error worth a message.
        _silence_stdout()
        return EXIT_FAILED
    except OSError as exc:
        where = f" {str(exc.filename)!r}" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_USAGE


def _silence_stdout() -> None:
    # Python flushes stdout at exit; pointing it at /dev/null keeps that flush from failing.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def _fail(message: str) -> None:
    print("error: " + " ".join(message.split()), file=sys.stderr)


# --- progress -----------------------------------------------------------------------------
class ProgressBar:
    """A one-line progress bar on stderr, redrawn in place only on a terminal.

    Call it as ``bar(done, total)`` or ``bar(done, total, hypervolume)`` (the signatures of
    the sample and search progress callbacks). Off a terminal nothing is drawn until
    :meth:`close` writes a final summary line, so logs of batch jobs stay clean.
    """

    def __init__(self, label: str, *, stream: IO[str] | None = None, width: int = 28,
                 min_interval: float = 0.1) -> None:
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.min_interval = min_interval
        self.start = time.perf_counter()
        self.done = 0
        self.total = 0
        self.extra: float | None = None
        self._last_draw = -math.inf

    def __call__(self, done: int, total: int, hypervolume: float | None = None) -> None:
        self.done, self.total, self.extra = int(done), int(total), hypervolume
        now = time.perf_counter()
        if self.live and (now - self._last_draw >= self.min_interval or done >= total):
            self._last_draw = now
            self.stream.write("\r" + self._line(now) + "\x1b[K")
            self.stream.flush()

    def _line(self, now: float) -> str:
        fraction = self.done / self.total if self.total else 0.0
        filled = int(round(self.width * min(fraction, 1.0)))
        bar = "#" * filled + "." * (self.width - filled)
        extra = "" if self.extra is None else f"  hypervolume {self.extra:.6g}"
        return (f"{self.label} [{bar}] {self.done:,}/{self.total:,} {fraction:4.0%}"
                f"{extra}  {now - self.start:.1f}s")

    def close(self, summary: str) -> None:
        """End the bar with ``summary`` (always written, terminal or not)."""
        if self.live:
            self.stream.write("\r\x1b[K")
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"{self.label}: {summary} in {elapsed:.1f} s\n")
        self.stream.flush()


# --- subcommands --------------------------------------------------------------------------
def _run_sample(args: argparse.Namespace) -> int:
    from .sample import write_feed

    bar = ProgressBar("sample")
    options = {} if args.train_rows is None else {"train_rows": args.train_rows}
    path = write_feed(args.out, args.rows, seed=args.seed, progress=bar, **options)
    bar.close(f"wrote {args.rows:,} rows to {str(path)}")
    return EXIT_OK


def _load(args: argparse.Namespace, schema: Any = None) -> LogSet:
    return load_logs(args.logs, schema=args.schema or schema, where=args.where or None,
                     sample_requests=args.sample_requests, seed=args.sample_seed)


def _formula_from_args(args: argparse.Namespace, logs: LogSet | None = None) -> Formula:
    """The formula of ``--kind --weights --alphas ...``; with ``logs``, an alpha not given
    takes its default for those logs (:func:`fusion.formulas.default_alphas`)."""
    kind = args.kind or "product"
    alphas = args.alphas
    if logs is not None and kind in KINDS:
        defaults = {o: a for o, a in default_alphas(logs, kind, args.transforms).items()
                    if o in args.weights}
        alphas = {**defaults, **(args.alphas or {})}
    return Formula.of(kind, args.weights, alphas=alphas, transforms=args.transforms, k=args.k)


def _run_evaluate(args: argparse.Namespace) -> int:
    config = None
    if args.config is not None:
        given = [f"--{o}" for o in ("kind", "alphas", "transforms", "k")
                 if getattr(args, o) is not None]
        if given:
            raise FusionError(f"{given[0]} goes with --weights, not with --config")
        config = load_config(args.config)
        formula = config.formula
    else:
        formula = _formula_from_args(args)  # malformed weights fail before the logs load
    baseline = load_config(args.baseline).formula if args.baseline else None
    logs = _load(args, schema=None if config is None else config.schema())
    if config is None:
        formula = _formula_from_args(args, logs)
    overrides: dict[str, Any] = {}
    if args.metrics:
        overrides["metrics"] = args.metrics
    if baseline is not None:
        overrides["baseline"] = baseline
    if args.group_by:
        overrides["group_by"] = args.group_by
    if args.ci is not None:
        overrides.update(ci=args.ci, n_boot=args.n_boot)
    if config is not None:
        config.check_fits(logs)
        result = config.evaluate(logs, **overrides)
    else:
        result = evaluate(logs, formula, **{"metrics": list(DEFAULT_METRICS), **overrides})
    check = None if config is None else _compare_exported(config, logs, result)
    if args.json:
        payload = {
            **result.to_dict(),
            "logs": {k: logs.fingerprint.get(k) for k in ("sources", "filters", "rows",
                                                          "requests", "content_hash")},
            "exported_metrics": check,
        }
        print(json.dumps(payload, indent=2, allow_nan=False))
    else:
        print(f"formula:  {_describe_formula(formula)}")
        if result.baseline_formula is not None:
            print(f"baseline: {_describe_formula(result.baseline_formula)}")
        print(f"logs:     {logs.n_rows:,} rows, {logs.n_requests:,} requests "
              f"(content hash {logs.fingerprint.get('content_hash')}), groups: {result.group_by}")
        print()
        print(_metrics_table(result))
        if check is not None:
            print()
            print(check["summary"])
    return EXIT_FAILED if check is not None and check["status"] == "differ" else EXIT_OK


def _compare_exported(config: FusionConfig, logs: LogSet, result: Any) -> dict[str, Any] | None:
    """How the fresh values compare with the config's exported ones (None: nothing to compare)."""
    if not config.metrics:
        return None
    exported = {(r["objective"], r["metric"]): r["value"] for r in config.metrics}
    frame = result.to_frame()
    fresh = {(o, m): v for o, m, v in zip(frame["objective"], frame["metric"], frame["value"])}
    common = [key for key in exported if key in fresh]
    differ = [key for key in common if not _same(exported[key], fresh[key])]
    recorded = config.evaluated_on or {}
    if not config.matches(logs):
        status = "other logs"
        summary = (f"note: these are not the logs the config was evaluated on (content hash "
                   f"{logs.fingerprint.get('content_hash')}, the config's "
                   f"{recorded.get('content_hash')} with filters {recorded.get('filters')}); "
                   f"{len(common) - len(differ)} of {len(common)} exported values are equal")
    elif result.group_by != config.evaluation["group_by"]:
        status = "other groups"
        summary = (f"note: grouped by {result.group_by}, the config's metrics by "
                   f"{config.evaluation['group_by']}: not compared")
    elif not common:
        status = "other metrics"
        summary = "note: none of the exported metrics was evaluated: not compared"
    elif differ:
        objective, metric = differ[0]
        status = "differ"
        summary = (f"exported metrics NOT reproduced: {len(differ)} of {len(common)} differ, e.g. "
                   f"{objective} {metric}: exported {exported[differ[0]]!r}, now "
                   f"{fresh[differ[0]]!r}")
    else:
        status = "reproduced"
        summary = f"exported metrics reproduced exactly: {len(common)} of {len(common)} equal"
    return {"status": status, "compared": len(common), "differ": len(differ), "summary": summary}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _run_search(args: argparse.Namespace) -> int:
    baseline = load_config(args.baseline) if args.baseline else None
    logs = _load(args)
    bar = ProgressBar("search")
    result = search(
        logs, args.kind, objectives=args.objectives, constraints=args.constraint,
        budget=args.budget, seed=args.seed, method=args.method, progress=bar,
        study=args.study, baseline=baseline, search_alphas=args.search_alphas,
        preference=args.preference, alphas=args.alphas, transforms=args.transforms, k=args.k,
    )
    bar.close(f"{len(result.candidates):,} candidates, hypervolume {result.hypervolume:.6g}")
    print(_front_report(result))
    if args.study is not None and result.knee_id is not None:
        print(f"\nexport a candidate: {PROG} export {args.study} --candidate knee "
              "--out config.json")
    return EXIT_OK


def _run_front(args: argparse.Namespace) -> int:
    print(_front_report(open_study(args.study)))
    return EXIT_OK


def _front_report(result: Any) -> str:
    feasible = int(result.candidates["feasible"].sum()) if len(result.candidates) else 0
    baseline = ", ".join(f"{k} {v:.6f}" for k, v in result.baseline_metrics.items())
    reference = ", ".join(f"{k} {v:.6f}" for k, v in result.reference_point.items())
    lines = [
        f"baseline:    {result.baseline_source}: {_describe_formula(result.baseline_formula)}",
        f"             {baseline}",
        f"constraints: {', '.join(result.constraints) or 'none'}",
        f"candidates:  {len(result.candidates):,} evaluated, {feasible:,} feasible, "
        f"{len(result.front):,} on the front" + ("" if result.complete else " (interrupted: "
                                                 "rerun the search to resume)"),
        f"hypervolume: {result.hypervolume:.6g} (reference point, {result.reference_source}: "
        f"{reference})",
        f"knee: {result.knee_id}   preferred: {result.preferred_id}",
        "",
    ]
    front = result.front
    if len(front) == 0:
        lines.append("no feasible candidate: relax the constraints or raise the budget")
        return "\n".join(lines)
    weight_columns, metric_columns = _study_columns(result)
    front = front.sort_values(metric_columns[0], ascending=False, kind="stable")
    columns = {"candidate": [str(c) for c in front["candidate_id"]],
               "pick": [_pick(result, c) for c in front["candidate_id"]]}
    columns.update({c: [f"{v:.4f}" for v in front[c]] for c in weight_columns})
    columns.update({c: [_fmt(v) for v in front[c]] for c in metric_columns})
    lines.append(format_table(columns, left=("pick",)))
    return "\n".join(lines)


def _pick(result: Any, candidate_id: Any) -> str:
    picks = [name for name in CANDIDATE_ALIASES if getattr(result, f"{name}_id") == candidate_id]
    return ",".join(picks)


def _run_export(args: argparse.Namespace) -> int:
    result = open_study(args.study)
    candidate_id = _candidate_id(result, args.candidate)
    formula = stored_formula(result.formula(candidate_id))
    logs = _study_logs(result, args.study)
    metrics = args.metrics or _study_metrics(result)
    evaluation = evaluate(logs, formula, metrics=metrics, baseline=result.baseline_formula)
    config = export_config(formula, logs, path=args.out, name=args.name or args.out.stem,
                           metrics=evaluation, baseline=result.baseline_formula)
    print(f"wrote {str(args.out)}: candidate {candidate_id} ({_describe_formula(config.formula)})")
    print(f"baseline: {result.baseline_source}: {_describe_formula(result.baseline_formula)}")
    print()
    print(_metrics_table(evaluation))
    return EXIT_OK


def _candidate_id(result: Any, text: str) -> Any:
    if text in CANDIDATE_ALIASES:
        candidate_id = getattr(result, f"{text}_id")
        no_preference = result.settings.get("preference") is None
        if candidate_id is None and text == "preferred" and no_preference:
            raise StudyError("the study has no preferred candidate: the search was run without "
                             "--preference; use 'knee' or a candidate id")
        if candidate_id is None:
            raise StudyError(f"the study has no {text} candidate: no candidate is feasible")
        return candidate_id
    ids = result.candidates["candidate_id"]
    matches = [cid for cid in ids if str(cid) == text.strip()]
    if not matches:
        examples = ", ".join(str(c) for c in list(ids[:3]))
        raise StudyError(f"--candidate {text!r} is not in the study ({len(ids)} candidates, "
                         f"e.g. {examples}); or use 'knee' or 'preferred'")
    return matches[0]


def _study_logs(result: Any, study: Path) -> LogSet:
    """Re-load the logs a study was run on and check they did not change since."""
    recorded = dict(result.logs_fingerprint)
    sources = recorded.get("sources") or []
    sample = recorded.get("sample_requests") or None
    logs = load_logs(
        sources, schema=result.logs_schema, where=recorded.get("filters") or None,
        sample_requests=None if sample is None else sample["n"],
        seed=0 if sample is None else sample["seed"],
    )
    if logs.fingerprint.get("content_hash") != recorded.get("content_hash"):
        raise StudyError(
            f"the logs of study {str(study)!r} changed since the search: {sources[0]!r}"
            f"{' and others' if len(sources) > 1 else ''} now hash to "
            f"{logs.fingerprint.get('content_hash')}, the study recorded "
            f"{recorded.get('content_hash')} ({recorded.get('rows')} rows); run the search again"
        )
    return logs


def _study_columns(result: Any) -> tuple[list[str], list[str]]:
    """The weight/alpha columns and the metric columns (searched first) of a study."""
    objectives = result.logs_schema.objective_names
    vectors = {f"{prefix}:{o}" for o in objectives for prefix in ("w", "alpha")}
    columns = list(result.candidates.columns)
    weights = [c for c in columns if c in vectors]
    metrics = list(result.objective_columns) + [
        c for c in columns
        if ":" in c and c not in vectors and c not in result.objective_columns
    ]
    return weights, metrics


def _study_metrics(result: Any) -> list[str]:
    """The default metrics and every metric the study searched or constrained."""
    _, columns = _study_columns(result)
    return list(dict.fromkeys([*DEFAULT_METRICS, *(c.partition(":")[2] for c in columns)]))


def _run_bench(args: argparse.Namespace) -> int:
    scripts = sorted(BENCH_DIR.glob("bench_*.py")) if BENCH_DIR.is_dir() else []
    names = [p.stem.removeprefix("bench_") for p in scripts]
    if args.list:
        print("\n".join(names) if names else f"no benchmark in {str(BENCH_DIR)}")
        return EXIT_OK
    if not scripts:
        raise FusionError(f"no benchmark found: {str(BENCH_DIR)} has no bench_*.py "
                          "(benchmarks ship with the source tree)")
    if args.name in (None, "all"):
        chosen = scripts
    else:
        name = args.name.removeprefix("bench_").removesuffix(".py")
        if name not in names:
            raise FusionError(f"unknown benchmark {args.name!r}; available: {', '.join(names)}")
        chosen = [scripts[names.index(name)]]
    status = EXIT_OK
    for script in chosen:
        print(f"== {script.stem} {' '.join(args.args)}".rstrip(), flush=True)
        completed = subprocess.run([sys.executable, str(script), *args.args], cwd=BENCH_DIR.parent,
                                   check=False)
        status = status or completed.returncode
    return status


# --- formatting ---------------------------------------------------------------------------
def _describe_formula(formula: Formula | None) -> str:
    if formula is None:
        return "-"
    parts = [formula.kind]
    for name, weight in formula.weights.items():
        term = f"{name}={weight:.4g}"
        if formula.kind == "product" and formula.alphas.get(name):
            term += f" (alpha {formula.alphas[name]:.3g})"
        if formula.kind == "sum" and formula.transforms.get(name, "identity") != "identity":
            term += f" ({formula.transforms[name]})"
        parts.append(term)
    if formula.kind == "rank":
        parts.append(f"k={formula.k:g}")
    return " ".join(parts)


def _metrics_table(result: Any) -> str:
    frame = result.to_frame()
    columns = {"objective": list(frame["objective"]), "metric": list(frame["metric"]),
               "value": [_fmt(v) for v in frame["value"]]}
    if result.baseline_formula is not None:
        columns["baseline"] = [_fmt(v) for v in frame["baseline"]]
        columns["delta"] = ["-" if pd.isna(d) else f"{d:+.2%}" for d in frame["delta"]]
    if result.ci is not None:
        columns[f"{result.ci:.0%} CI"] = [
            "-" if pd.isna(lo) else f"[{_fmt(lo)}, {_fmt(hi)}]"
            for lo, hi in zip(frame["ci_low"], frame["ci_high"])]
    columns["groups"] = [f"{int(u):,}" for u in frame["groups_used"]]
    columns["skipped"] = [f"{int(k):,}" for k in frame["groups_skipped"]]
    return format_table(columns, left=("objective", "metric"))


def format_table(columns: dict[str, list[str]], *, left: Sequence[str] = ()) -> str:
    """Text columns under their headers; the ``left`` ones left-aligned, the rest right."""
    widths = {name: max([len(name), *map(len, cells)]) for name, cells in columns.items()}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(widths[name]) if name in left else cell.rjust(widths[name])
                         for name, cell in zip(columns, cells)).rstrip()

    rows = zip(*columns.values())
    return "\n".join([line(list(columns)), *(line(row) for row in rows)])


def _fmt(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):.6f}"


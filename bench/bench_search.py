"""Weight search: the default method against random, Sobol and optuna's NSGA-II and TPE.

Run: python bench/bench_search.py [--logs sample_logs/feed_sample.parquet] [--seeds 5]

Setting: the bundled sample logs (generated with ``fusion.sample.write_feed`` if missing),
a product formula (alpha 1 on dwell, whose predictions can be 0 seconds), four searched
metrics: gauc of click, like and conversion and ndcg@10 of dwell. Every method searches the
same space: weights on the simplex, reached from the unit cube by
``fusion.search.unit_to_simplex``; optuna's samplers suggest the unit-cube coordinates.
Every candidate of every method is scored on the full logs by ``fusion.evaluate_many``, in
batches of 20 (optuna: ask 20, evaluate, tell 20).

One reference point for every hypervolume: the per-metric worst value (nadir) of the Pareto
front of a 16,384-point Sobol sample of the simplex, computed once with ``evaluate_many`` and
cached by the logs' content hash and the metric code. Our search is run with
``reference_point="nadir"``: it is told to cover the whole front (the default picks the
baseline's metrics when the front beats them), not given the benchmark's reference.

(a) Equal count: ``--budget`` full-data evaluations per run, ``--seeds`` seeds per method;
    median hypervolume per method and its ratio to ours. Goal: ours >= the best peer.
(b) Equal patience: every method runs for ``--patience`` seconds, starting a batch only if
    it is expected to end in time (ours: default settings with ``max_seconds`` instead of a
    count budget). Goal: ours returns within the patience with >= 98% of the Sobol
    reference's hypervolume. Hypervolume (share of the reference) against time.

The machine may be shared: wall times, and so (b), move with its load; (a) does not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from scipy.stats import qmc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fusion  # noqa: E402  (the bench runs from a source tree)
from fusion.pareto import hypervolume, pareto_ranks  # noqa: E402
from fusion.search import unit_to_simplex  # noqa: E402

OBJECTIVES = [("click", "gauc"), ("like", "gauc"), ("conversion", "gauc"), ("dwell", "ndcg@10")]
COLUMNS = [f"{o}:{m}" for o, m in OBJECTIVES]
METRICS = ["gauc", "ndcg@10"]
ALPHAS = {"dwell": 1.0}
KIND = "product"
BATCH = 20
REFERENCE_SEED = 20_240_611     # a Sobol stream no search below uses
SAMPLE_ROWS = 200_000
TIMES = (2.5, 5.0, 7.5, 10.0, 12.5, 15.0)
UNLIMITED = 1_000_000           # (b) runs are limited by time only


# --- inputs --------------------------------------------------------------------------------
def load_sample(path: Path, cache: Path) -> fusion.LogSet:
    if not path.exists():
        path = cache / f"feed_sample_{SAMPLE_ROWS}.parquet"
        if not path.exists():
            print(f"{path} missing: generating {SAMPLE_ROWS:,} rows with fusion.sample.write_feed",
                  flush=True)
            from fusion.sample import write_feed

            write_feed(path, SAMPLE_ROWS, seed=0)
    return fusion.load_logs(path)


def score(logs: fusion.LogSet, unit: np.ndarray) -> np.ndarray:
    """Searched metrics (n, 4) of unit-cube points, scored on the full logs."""
    frame = fusion.evaluate_many(logs, KIND, weights=unit_to_simplex(unit), alphas=ALPHAS,
                                 metrics=METRICS)
    return frame[COLUMNS].to_numpy()


def sobol_reference(logs: fusion.LogSet, n: int, cache: Path) -> np.ndarray:
    """Metrics of ``n`` Sobol points of the simplex, cached by the logs' content hash, the
    settings and the source of the modules that compute metrics (a changed kernel recomputes)."""
    code = hashlib.sha256()
    for module in ("formulas", "evaluate", "metrics"):
        code.update((ROOT / "fusion" / f"{module}.py").read_bytes())
    key = (f"{logs.fingerprint['content_hash']}-{n}-{REFERENCE_SEED}-{KIND}-{ALPHAS}-"
           f"{'_'.join(COLUMNS)}-{code.hexdigest()[:16]}")
    path = cache / f"sobol_reference_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        stored = np.load(path, allow_pickle=False)
        if str(stored["key"]) == key:
            return stored["metrics"]
    unit = qmc.Sobol(d=len(logs.objectives) - 1, scramble=True, seed=REFERENCE_SEED).random_base2(
        int(math.log2(n)))
    started = time.perf_counter()
    parts = []
    for start in range(0, n, 256):
        parts.append(score(logs, unit[start:start + 256]))
        done = start + len(parts[-1])
        if done % 4096 == 0 or done == n:
            print(f"  Sobol reference: {done:,}/{n:,} in {time.perf_counter() - started:.0f} s",
                  flush=True)
    metrics = np.vstack(parts)
    np.savez(path, metrics=metrics, key=np.array(key))
    return metrics


# --- runs: each returns a trace of (elapsed s, evaluations, hypervolume) per batch ------------
def trace_of(points: np.ndarray, elapsed: np.ndarray, ends: list[int], reference: np.ndarray):
    return [(float(elapsed[end - 1]), end, hypervolume(points[:end], reference)) for end in ends]


def run_ours(logs, method: str, seed: int, budget: int, reference: np.ndarray, *,
             seconds: float | None = None):
    started = time.perf_counter()
    result = fusion.search(logs, KIND, objectives=OBJECTIVES, budget=budget, seed=seed,
                           method=method, alphas=ALPHAS, reference_point="nadir",
                           batch_size=BATCH, max_seconds=seconds)
    wall = time.perf_counter() - started
    frame = result.candidates
    ends = (np.flatnonzero(np.diff(frame["batch"].to_numpy(), append=-1) != 0) + 1).tolist()
    return trace_of(frame[COLUMNS].to_numpy(), frame["elapsed_s"].to_numpy(), ends, reference), wall


def run_optuna(logs, sampler: str, seed: int, reference: np.ndarray, *, budget: int | None = None,
               seconds: float | None = None):
    dims = len(logs.objectives) - 1
    make = {"nsga2": optuna.samplers.NSGAIISampler, "tpe": optuna.samplers.TPESampler}[sampler]
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(directions=["maximize"] * len(COLUMNS), sampler=make(seed=seed))
    points, times, ends = [], [], []
    slowest = 0.0
    while True:
        n = BATCH if budget is None else min(BATCH, budget - len(points))
        # The rule fusion.search(max_seconds=...) uses: start a batch only if two as slow as
        # the slowest so far still fit.
        if n <= 0 or (seconds is not None
                      and time.perf_counter() - started + 2 * slowest > seconds):
            break
        batch_started = time.perf_counter()
        trials = [study.ask() for _ in range(n)]
        unit = np.array([[t.suggest_float(f"u{j}", 0.0, 1.0) for j in range(dims)] for t in trials])
        values = score(logs, unit)
        for trial, row in zip(trials, values):
            study.tell(trial, row.tolist())
        points.extend(values)
        slowest = max(slowest, time.perf_counter() - batch_started)
        times.extend([time.perf_counter() - started] * n)
        ends.append(len(points))
    wall = time.perf_counter() - started
    return trace_of(np.array(points), np.array(times), ends, reference), wall


def run(logs, method: str, seed: int, reference: np.ndarray, *, budget: int | None = None,
        seconds: float | None = None):
    """The trace of one run and its wall time (the search call, result included; the
    benchmark's own hypervolume trace is computed afterwards)."""
    if method in ("nsga2", "tpe"):
        return run_optuna(logs, method, seed, reference, budget=budget, seconds=seconds)
    return run_ours(logs, method, seed, budget, reference, seconds=seconds)


def at_time(trace, t: float) -> float:
    """Hypervolume of the last batch finished by ``t`` seconds (0 before the first)."""
    finished = [hv for elapsed, _, hv in trace if elapsed <= t]
    return finished[-1] if finished else 0.0


# --- report --------------------------------------------------------------------------------
LABELS = {"auto": "ours (auto)", "sobol": "sobol", "random": "random", "nsga2": "optuna NSGA-II",
          "tpe": "optuna TPE"}
PEERS = ("random", "nsga2", "tpe")


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=Path, default=ROOT / "sample_logs" / "feed_sample.parquet")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "fusion-tuner-bench",
                        help="where the generated sample and the Sobol reference are kept")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=200, help="(a) evaluations per run")
    parser.add_argument("--patience", type=float, default=15.0, help="(b) seconds per run")
    parser.add_argument("--reference-points", type=int, default=16_384)
    parser.add_argument("--methods", default="auto,sobol,random,nsga2,tpe")
    parser.add_argument("--parts", default="a,b", help="which comparisons to run: a, b or a,b")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    parts = args.parts.split(",")
    args.cache.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    logs = load_sample(args.logs, args.cache)
    print(f"logs: {logs.n_rows:,} rows, {logs.n_requests:,} requests; {KIND} formula, "
          f"metrics {', '.join(COLUMNS)}", flush=True)
    score(logs, np.full((2, len(logs.objectives) - 1), 0.5))   # compile the kernels first
    reference_metrics = sobol_reference(logs, args.reference_points, args.cache)
    front = reference_metrics[pareto_ranks(reference_metrics) == 0]
    reference = front.min(axis=0)
    full_hv = hypervolume(reference_metrics, reference)
    print(f"reference point (nadir of the {args.reference_points:,}-point Sobol front, "
          f"{len(front):,} points): "
          + ", ".join(f"{c} {v:.5f}" for c, v in zip(COLUMNS, reference)))
    print(f"Sobol reference hypervolume: {full_hv:.6g}\n", flush=True)
    figures: dict = {"reference_point": reference.tolist(), "reference_hypervolume": full_hv}

    if "a" in parts:
        print(f"(a) equal count: {args.budget} full-data evaluations, seeds 0..{args.seeds - 1}")
        hv: dict[str, list[float]] = {}
        seconds: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            for method in methods:   # seed-major: load drift hits every method
                trace, wall = run(logs, method, seed, reference, budget=args.budget)
                hv.setdefault(method, []).append(trace[-1][2])
                seconds.setdefault(method, []).append(wall)
                print(f"  {LABELS[method]:>15} seed {seed}: hypervolume {trace[-1][2]:.6g} "
                      f"({trace[-1][2] / full_hv:.2%} of the reference) in {wall:.1f} s",
                      flush=True)
        medians = {m: float(np.median(v)) for m, v in hv.items()}
        peers = [m for m in methods if m in PEERS]
        best_peer = max(peers, key=medians.get) if peers else None
        rows = [[LABELS[m], f"{medians[m]:.6g}", f"{medians[m] / full_hv:.2%}",
                 f"{min(hv[m]) / full_hv:.2%}", f"{max(hv[m]) / full_hv:.2%}",
                 f"{medians.get('auto', math.nan) / medians[m]:.3f}",
                 f"{np.median(seconds[m]):.1f}"] for m in methods]
        print()
        print(table(["method", "median HV", "of ref", "min", "max", "ours / it", "median s"], rows))
        if best_peer is not None and "auto" in medians:
            ratio = medians["auto"] / medians[best_peer]
            print(f"\nours / best peer ({LABELS[best_peer]}): {ratio:.4f} -> "
                  f"{'PASS' if ratio >= 1 else 'FAIL'} (goal >= 1)\n", flush=True)
        figures["equal_count"] = {"hypervolume": hv, "seconds": seconds, "median": medians}

    if "b" in parts:
        print(f"(b) equal patience: {args.patience:g} s per run, seeds 0..{args.seeds - 1}; every "
              "method starts a batch only if it would end in time; ours: default settings with "
              f"max_seconds={args.patience:g} instead of a count budget")
        traces: dict[str, list] = {}
        walls: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            for method in methods:   # seed-major: load drift hits every method
                trace, wall = run(logs, method, seed, reference, budget=UNLIMITED,
                                  seconds=args.patience)
                traces.setdefault(method, []).append(trace)
                walls.setdefault(method, []).append(wall)
                print(f"  {LABELS[method]:>15} seed {seed}: {trace[-1][1]} evaluations, returned "
                      f"after {wall:.1f} s, {trace[-1][2] / full_hv:.2%} of the reference",
                      flush=True)
        times = [t for t in TIMES if t <= args.patience] or [args.patience]
        rows = []
        for method in methods:
            shares = [[at_time(tr, t) / full_hv for tr in traces[method]] for t in times]
            rows.append([LABELS[method]] + [f"{np.median(s):.2%}" for s in shares]
                        + [f"{np.median([tr[-1][1] for tr in traces[method]]):.0f}",
                           f"{np.median(walls[method]):.1f}"])
        print()
        print("median hypervolume (share of the Sobol reference) after t seconds:")
        print(table(["method"] + [f"t={t:g}s" for t in times] + ["evaluations", "returned s"],
                    rows))
        if "auto" in traces:
            share = float(np.median([tr[-1][2] for tr in traces["auto"]])) / full_hv
            finish = float(max(walls["auto"]))
            ok = share >= 0.98 and finish <= args.patience
            print(f"\nours: median {share:.2%} of the reference, slowest run {finish:.1f} s -> "
                  f"{'PASS' if ok else 'FAIL'} (goal >= 98% within {args.patience:g} s)")
        figures["equal_patience"] = {m: [[list(p) for p in tr] for tr in v]
                                     for m, v in traces.items()}

    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

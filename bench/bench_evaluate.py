"""fusion.evaluate against its peers on the same logs, in one run.

Run: python bench/bench_evaluate.py [--rows 1000000] [--candidates 200]
                                    [--memory-rows 10000000] [--sklearn-requests 200]

Workload: a synthetic log of ``--rows`` impressions (50 per request, 4 objectives), the
metrics gauc, ndcg@10 and top@10 of every objective for one ``sum`` formula. Peers:

- one DuckDB SQL query with window functions (fusion.reference.sql_metrics), given the fused
  scores ready-made (so it does less work than evaluate);
- a Python loop over requests calling scikit-learn (fusion.reference.sklearn_loop_metrics),
  timed on the first ``--sklearn-requests`` requests and extrapolated linearly;
- the floor: one numpy pass ``scores @ w`` (the fusion alone, no metric).

Then evaluate_many candidates per second, the metric kernel alone (given fused scores, and
fusing the features itself as evaluate_many does), the peak memory of evaluate on
``--memory-rows`` impressions (resident-set high-water mark in a fresh subprocess, reset
after loading, set against LogSet.nbytes), and the metric kernel's first-call latency with a
cold and a warm numba cache. Times are medians of ``--repeats`` runs after a warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_load import write_synthetic_log  # noqa: E402  (the same synthetic log)

METRICS = ("gauc", "ndcg@10", "top@10")
WEIGHTS = {"click": 0.4, "dwell": 0.2, "like": 0.2, "conversion": 0.2}
GOALS = {"sql": 25.0, "sklearn": 1000.0, "floor": 40.0, "candidates_per_s": 50.0, "memory": 0.5}


def median_time(run, repeats: int) -> tuple[float, object]:
    result = run()  # warm-up: caches, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _kib(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return int(re.search(rf"^{key}:\s+(\d+) kB", status.read(), re.M).group(1)) * 1024


def memory_child(path: str) -> None:
    """Load the logs, reset the RSS high-water mark, evaluate, print the peak above the start."""
    import gc
    import tracemalloc

    import fusion

    logs = fusion.load_logs(path)
    formula = fusion.Formula.sum(WEIGHTS)
    fusion.evaluate(logs.take_requests(np.arange(100)), formula, metrics=METRICS)  # code paths
    gc.collect()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")  # resets VmHWM to the current resident set
    base = _kib("VmRSS")
    start = time.perf_counter()
    fusion.evaluate(logs, formula, metrics=METRICS)
    elapsed = time.perf_counter() - start
    peak_rss = _kib("VmHWM") - base
    # Second opinion: numpy's allocations as tracemalloc sees them (not numba's scratch).
    tracemalloc.start()
    fusion.evaluate(logs, formula, metrics=METRICS)
    peak_traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"peak_extra": peak_rss, "peak_traced": peak_traced, "nbytes": logs.nbytes,
                      "rows": logs.n_rows, "seconds": elapsed}))


FIRST_CALL = """
import time
start = time.perf_counter()
import numpy as np
from fusion.metrics import grouped_metric_sums
imported = time.perf_counter()
grouped_metric_sums(np.array([0.3, 0.1, 0.2]), np.array([[1.0], [0.0], [2.0]], np.float32),
                    np.array([0, 3]), specs=["gauc", "ndcg@10", "top@10"],
                    positive_thresholds=[0.0], log1p_gain=[True])
print(imported - start, time.perf_counter() - imported)
"""


def first_call_latency(cache_dir: Path) -> list[tuple[float, float]]:
    """(import, first call) seconds in fresh interpreters: an empty numba cache, then warm."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    out = []
    for _ in ("cold", "warm"):
        text = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True,
                              capture_output=True, text=True).stdout
        imported, called = map(float, text.split())
        out.append((imported, called))
    return out


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--memory-rows", type=int, default=10_000_000,
                        help="rows of the memory measurement (0: skip it)")
    parser.add_argument("--sklearn-requests", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return 0

    import fusion
    from fusion.formulas import combine
    from fusion.metrics import combined_metric_sums, grouped_metric_sums, label_rules
    from fusion.reference import sklearn_loop_metrics, sql_metrics

    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        tmp = Path(tmp)
        path = tmp / "logs.parquet"
        start = time.perf_counter()
        write_synthetic_log(path, args.rows)
        logs = fusion.load_logs(path)
        elapsed = time.perf_counter() - start
        print(f"logs: {logs.n_rows:,} rows, {logs.n_requests:,} requests, objectives "
              f"{list(logs.objectives)} (written and loaded in {elapsed:.1f} s)")
        formula = fusion.Formula.sum(WEIGHTS)
        thresholds, log1p_gain = label_rules(logs.schema.objectives)
        rules = dict(specs=METRICS, positive_thresholds=thresholds, log1p_gain=log1p_gain)

        t_eval, result = median_time(lambda: fusion.evaluate(logs, formula, metrics=METRICS),
                                     args.repeats)
        fused = formula.fuse(logs)
        t_sql, by_sql = median_time(
            lambda: sql_metrics(fused, logs.labels, logs.group_offsets, **rules), args.repeats)
        sql_diff = float(np.max(np.abs(by_sql.values - result.values)))

        n_sub = min(args.sklearn_requests, logs.n_requests)
        sub_rows = int(logs.group_offsets[n_sub])
        start = time.perf_counter()
        by_sklearn = sklearn_loop_metrics(fused[:sub_rows], logs.labels[:sub_rows],
                                          logs.group_offsets[:n_sub + 1], **rules)
        t_sklearn = (time.perf_counter() - start) * logs.n_requests / n_sub
        sub_logs = logs.take_requests(np.arange(n_sub))
        sklearn_diff = float(np.max(np.abs(
            by_sklearn.values - fusion.evaluate(sub_logs, formula, metrics=METRICS).values)))

        weights = np.array([WEIGHTS[o] for o in logs.objectives], dtype=np.float32)
        t_floor, _ = median_time(lambda: logs.scores @ weights, max(args.repeats, 5))

        grid = np.random.default_rng(0).dirichlet(np.ones(len(logs.objectives)), args.candidates)
        # The metric kernel alone, given ready fused scores of a few candidates.
        kernel_candidates = 16
        fused_many = combine(logs.scores.astype(np.float64), grid[:kernel_candidates])
        t_kernel, _ = median_time(
            lambda: grouped_metric_sums(fused_many, logs.labels, logs.group_offsets, **rules), 1)
        del fused_many
        # The same with the fusion inside the kernel (what evaluate_many runs).
        features = logs.scores.astype(np.float64)
        t_combined, _ = median_time(
            lambda: combined_metric_sums(features, grid[:kernel_candidates], logs.labels,
                                         logs.group_offsets, **rules), 1)
        del features
        t_many, many = median_time(
            lambda: fusion.evaluate_many(logs, "sum", weights=grid, metrics=METRICS), 1)
        per_second = args.candidates / t_many
        first_row = fusion.evaluate(
            logs, fusion.Formula.sum(dict(zip(logs.objectives, grid[0].tolist()))),
            metrics=METRICS).values
        many_diff = float(np.max(np.abs(
            many.iloc[0][[f"{o}:{m}" for o in logs.objectives for m in METRICS]].to_numpy(float)
            - first_row.reshape(-1))))

        memory = None
        if args.memory_rows:
            big = tmp / "big.parquet"
            write_synthetic_log(big, args.memory_rows)
            text = subprocess.run([sys.executable, __file__, "--memory-child", str(big)],
                                  check=True, capture_output=True, text=True).stdout
            memory = json.loads(text.strip().splitlines()[-1])
        (cold, warm) = first_call_latency(tmp / "numba_cache")

    ratio_sql, ratio_sklearn, ratio_floor = t_sql / t_eval, t_sklearn / t_eval, t_eval / t_floor
    ok = lambda good: "ok" if good else "MISSED"  # noqa: E731
    rows = [
        ["peer (gauc, ndcg@10, top@10 x 4 objectives)", "seconds", "ratio", "goal", ""],
        ["fusion.evaluate, 1 formula", f"{t_eval:.4f}", "1", "", ""],
        ["DuckDB: one SQL query (fused scores given)", f"{t_sql:.3f}",
         f"{ratio_sql:.1f}x slower", f">= {GOALS['sql']:g}x", ok(ratio_sql >= GOALS["sql"])],
        [f"scikit-learn loop per request (extrapolated from {n_sub} requests)",
         f"{t_sklearn:.1f}", f"{ratio_sklearn:.0f}x slower", f">= {GOALS['sklearn']:g}x",
         ok(ratio_sklearn >= GOALS["sklearn"])],
        ["floor: numpy scores @ w (no metric)", f"{t_floor:.4f}", f"{ratio_floor:.1f}x faster",
         f"<= {GOALS['floor']:g}x", ok(ratio_floor <= GOALS["floor"])],
        [f"fusion.evaluate_many, {args.candidates} candidates", f"{t_many:.2f}",
         f"{per_second:.1f} cand/s", f">= {GOALS['candidates_per_s']:g}/s",
         ok(per_second >= GOALS["candidates_per_s"])],
        [f"metric kernel alone on ready fused scores, {kernel_candidates} candidates",
         f"{t_kernel:.2f}",
         f"{kernel_candidates / t_kernel:.1f} cand/s", "", ""],
        [f"metric kernel fusing features itself, {kernel_candidates} candidates",
         f"{t_combined:.2f}", f"{kernel_candidates / t_combined:.1f} cand/s", "", ""],
    ]
    if memory is not None:
        share = max(memory["peak_extra"], memory["peak_traced"]) / memory["nbytes"]
        rows.append([f"evaluate peak extra memory, {memory['rows']:,} rows",
                     f"{memory['seconds']:.2f}",
                     f"{share:.3f}x LogSet ({memory['nbytes'] / 2**20:.0f} MiB)",
                     f"<= {GOALS['memory']:g}x", ok(share <= GOALS["memory"])])
    print()
    print(table(rows))
    print()
    print(f"max |evaluate - SQL| = {sql_diff:.2e} (must be <= 1e-9); "
          f"max |evaluate - scikit-learn| on the {n_sub} timed requests = {sklearn_diff:.2e}; "
          f"max |evaluate_many row 0 - evaluate| = {many_diff:.2e}")
    print(f"scikit-learn was timed on the first {n_sub} of {logs.n_requests:,} requests and "
          "extrapolated linearly to all of them")
    if memory is not None:
        print(f"evaluate memory on {memory['rows']:,} rows, above the loaded logs in a fresh "
              f"process: resident-set high-water mark (/proc VmHWM, reset after loading) "
              f"+{memory['peak_extra'] / 2**20:.1f} MiB; tracemalloc peak (numpy allocations) "
              f"{memory['peak_traced'] / 2**20:.1f} MiB; the larger one is in the table")
    print(f"metric kernel first call in a fresh interpreter: cold numba cache "
          f"{cold[1]:.2f} s (compile), warm cache {warm[1]:.3f} s; "
          f"import fusion.metrics {cold[0]:.2f} s / {warm[0]:.2f} s")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    assert sql_diff <= 1e-9, f"evaluate and the SQL reference differ by {sql_diff}"
    assert sklearn_diff <= 1e-9, f"evaluate and scikit-learn differ by {sklearn_diff}"
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loading logs into a LogSet against DuckDB's plain fetchnumpy of the same columns.

Run: python bench/bench_load.py [--rows 10000000] [--repeats 3]

Both peers read the same Parquet file in the same run, alternately, and the median times are
compared. Peak memory is measured in fresh subprocesses (the high-water mark of resident
memory above what the process held after its imports) and set against the LogSet's arrays.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OBJECTIVES = ("click", "dwell", "like", "conversion")


def write_synthetic_log(path: Path, rows: int, *, seed: int = 0, chunk_rows: int = 1_000_000) -> None:
    """A log shaped like the bundled sample (50 candidates a request), written in chunks."""
    rng = np.random.default_rng(seed)
    writer = None
    start_ts = np.datetime64("2026-11-01T00:00:00", "us")
    surfaces = np.array(["feed", "search", "related"])
    try:
        for begin in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - begin)
            row = np.arange(begin, begin + n)
            columns = {
                "request_id": row // 50,
                "user_id": (row // 50) % 300_000,
                "item_id": rng.integers(0, 2_000_000, n),
                "ts": start_ts + (row * 7 * 86_400_000_000 // rows).astype("timedelta64[us]"),
                "surface": surfaces[rng.integers(0, 3, n)],
            }
            for name in OBJECTIVES:
                score = rng.random(n)
                columns[f"pred_{name}"] = score * 60 if name == "dwell" else score
                if name == "dwell":
                    columns[f"label_{name}"] = np.where(rng.random(n) < 0.1, rng.exponential(30, n), 0.0)
                else:
                    columns[f"label_{name}"] = (rng.random(n) < score * 0.2).astype(np.int64)
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def raw_fetch(path: Path) -> dict:
    """The floor: DuckDB's own fetchnumpy of the columns a LogSet holds, no ordering or checks."""
    import duckdb

    con = duckdb.connect()
    columns = ["request_id", "user_id", "item_id", "ts", "surface"]
    columns += [f"{p}_{o}" for o in OBJECTIVES for p in ("pred", "label")]
    return con.execute(
        f"SELECT {', '.join(columns)} FROM read_parquet(?)", [str(path)]
    ).fetchnumpy()


def load(path: Path):
    import fusion

    return fusion.load_logs(path)


def _measure_memory(path: Path, which: str) -> dict:
    """Run one peer in a fresh interpreter; report its resident high-water mark above baseline."""
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(ROOT / 'bench')!r})
import bench_load, duckdb, fusion, numpy, pandas, pyarrow
def status(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
base = status('VmRSS')
result = bench_load.{which}(__import__('pathlib').Path({str(path)!r}))
# VmHWM, not ru_maxrss: ru_maxrss survives exec and so counts the parent's memory too.
peak = status('VmHWM')
nbytes = result.nbytes if hasattr(result, 'nbytes') else sum(v.nbytes for v in result.values())
print(json.dumps({{'extra_peak': peak - base, 'result_bytes': int(nbytes)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--file", type=Path, help="use this Parquet file instead of a synthetic one")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or Path(tmp) / "logs.parquet"
        if args.file is None:
            started = time.perf_counter()
            write_synthetic_log(path, args.rows)
            print(f"wrote {args.rows:,} rows to a temporary Parquet in {time.perf_counter() - started:.1f} s")
        load(path)  # warm the file cache and imports for both peers
        times: dict[str, list[float]] = {"load_logs": [], "duckdb fetchnumpy": []}
        for _ in range(args.repeats):
            for name, fn in (("duckdb fetchnumpy", raw_fetch), ("load_logs", load)):
                started = time.perf_counter()
                result = fn(path)
                times[name].append(time.perf_counter() - started)
                del result
        medians = {name: statistics.median(values) for name, values in times.items()}
        ratio = medians["load_logs"] / medians["duckdb fetchnumpy"]
        memory = _measure_memory(path, "load")
        raw_memory = _measure_memory(path, "raw_fetch")

    print(f"\n{'peer':<20}{'median s':>10}{'runs':>30}")
    for name, values in times.items():
        print(f"{name:<20}{medians[name]:>10.3f}{'  '.join(f'{v:.3f}' for v in values):>30}")
    print(f"\ntime ratio load_logs / duckdb fetchnumpy: {ratio:.2f}x  (goal <= 1.5x)")
    mem_ratio = memory["extra_peak"] / memory["result_bytes"]
    print(f"load_logs peak memory above baseline: {memory['extra_peak'] / 2**20:,.0f} MiB; "
          f"LogSet arrays {memory['result_bytes'] / 2**20:,.0f} MiB; ratio {mem_ratio:.2f}x (goal <= 2x)")
    print(f"duckdb fetchnumpy peak memory above baseline: {raw_memory['extra_peak'] / 2**20:,.0f} MiB "
          f"for {raw_memory['result_bytes'] / 2**20:,.0f} MiB of arrays")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

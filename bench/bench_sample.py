"""Writing the simulated feed: wall time and peak memory for growing row counts.

Run: python bench/bench_sample.py [--rows 1000000 10000000] [--chunk-rows 250000]

Each size runs ``fusion.sample.write_feed`` in a fresh interpreter that reports its own peak
resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and its resident memory
after the imports. Streaming keeps the peak flat: the ratio of the largest run's peak to the
smallest's should stay near 1 however many rows are written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
import fusion.sample

def rss():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS'):
                return int(line.split()[1]) * 1024

base = rss()
started = time.perf_counter()
path = fusion.sample.write_feed({out!r}, {rows}, seed={seed}, chunk_rows={chunk_rows})
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
size = os.path.getsize(path)
print(json.dumps({{'seconds': elapsed, 'peak': peak, 'base': base, 'bytes': size}}))
"""


def measure(rows: int, *, seed: int, chunk_rows: int, directory: Path) -> dict:
    """Write ``rows`` rows in a fresh interpreter; its wall time, peak RSS and file size."""
    out = directory / f"feed-{rows}.parquet"
    code = _CHILD.format(root=str(ROOT), out=str(out), rows=rows, seed=seed, chunk_rows=chunk_rows)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    out.unlink()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sorted(args.rows):
            results[rows] = r = measure(rows, seed=args.seed, chunk_rows=args.chunk_rows,
                                        directory=Path(tmp))
            mib = {key: r[key] / 2**20 for key in ("peak", "base", "bytes")}
            print(f"{rows:>12,} rows: {r['seconds']:7.1f} s ({rows / r['seconds']:,.0f} rows/s), "
                  f"peak RSS {mib['peak']:,.0f} MiB (after imports {mib['base']:,.0f} MiB), "
                  f"file {mib['bytes']:,.1f} MiB", flush=True)
    smallest, largest = min(results), max(results)
    if largest != smallest:
        ratio = results[largest]["peak"] / results[smallest]["peak"]
        print(f"\npeak RSS ratio {largest:,} / {smallest:,} rows: {ratio:.2f}x "
              f"for {largest / smallest:.0f}x the rows (flat memory: close to 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The dashboard on large logs: the bundled sample against a 10M-row log, in one run.

Run: python bench/bench_dashboard.py [--rows 10000000] [--budget 200]

For each log, a fresh ``streamlit run app/streamlit_app.py -- --logs PATH`` server and one
session in headless Chromium (Debian's ``chromium``) walk every page: Data, Distributions,
Tune (five slider moves), Pareto (a search of ``--budget`` candidates), Export (a JSON
download), then a sidebar filter (``surface`` = feed) and Tune again. The server's
resident-set high-water mark (``/proc/PID/status`` VmHWM) is read at the end.

Peers: the bundled sample; the large log with the default interactive sample (the Distributions,
Tune and Pareto pages on about 1M rows of whole requests); the large log with every page on
all rows (``--interactive-rows 0``). Printed per peer: the LogSet's size, the server's peak
memory, the seconds of each step and the slider re-render times; then the ratios the README's
memory budget is written in: peak over the sample's, extra peak per byte of LogSet, and what
the interactive sample saves.

The large log is the synthetic one of ``bench_load.py`` (50 candidates a request, four
objectives, a ``surface`` slice), cached under ``bench/.cache/``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_load import write_synthetic_log  # noqa: E402

import fusion  # noqa: E402
from app.state import INTERACTIVE_ROWS, SAMPLE_LOGS  # noqa: E402
from tests.dashboard_driver import Activity, open_page, serve  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
STEP_TIMEOUT_MS = 900_000   # a page's first run on 10M rows computes its statistics
SLIDER_KEYS = ["ArrowRight"] * 3 + ["ArrowLeft"] * 2


def peak_rss(pid: int) -> int:
    """The process's resident-set high-water mark in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM")


def walk(chromium: str, script_args: list[str], budget: int, log_file: Path) -> dict:
    """One session through every page; the seconds of each step, slider times, peak memory."""
    steps: dict[str, float] = {}
    with serve(log_file, script_args) as (url, server), \
            open_page(chromium, STEP_TIMEOUT_MS) as page:
        activity = Activity(page)

        def step(name: str, action) -> None:
            started = time.perf_counter()
            action()
            steps[name] = time.perf_counter() - started

        def first_page() -> None:
            page.goto(url)
            page.get_by_test_id("stMetric").filter(has_text="requests").wait_for()
            activity.wait_quiet()

        def filter_surface() -> None:
            sidebar = page.get_by_test_id("stSidebar")
            sidebar.get_by_role("combobox").first.click()
            page.get_by_role("option", name="feed").click()
            page.keyboard.press("Escape")
            sidebar.get_by_text("(filtered)").wait_for()
            activity.wait_quiet()

        step("Data (first render)", first_page)
        step("Distributions", lambda: activity.go_to("Distributions"))
        step("Tune", lambda: activity.go_to("Tune"))
        slider_ms = activity.time_slider_moves(SLIDER_KEYS)
        step("Pareto", lambda: activity.go_to("Pareto"))
        step(f"search, {budget} candidates", lambda: activity.run_search(budget, STEP_TIMEOUT_MS))
        step("Export", lambda: activity.go_to("Export"))
        step("filter surface=feed", filter_surface)
        step("Tune, filtered", lambda: activity.go_to("Tune"))
        slider_ms += activity.time_slider_moves(SLIDER_KEYS)
        return {"steps": steps, "slider_ms": slider_ms, "peak": peak_rss(server.pid)}


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--budget", type=int, default=200, help="candidates of the search")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium")
    if chromium is None:
        parser.error("chromium is not installed (apt-get install chromium)")

    CACHE.mkdir(parents=True, exist_ok=True)
    large = CACHE / f"synthetic-{args.rows}.parquet"
    if not large.exists():
        print(f"writing a {args.rows:,}-row synthetic log to {large} ...", flush=True)
        partial = large.with_suffix(".partial")
        write_synthetic_log(partial, args.rows)
        partial.rename(large)

    big = f"{args.rows / 1e6:g}M rows"
    peers = {  # name: (logs, dashboard options)
        "bundled sample": (SAMPLE_LOGS, []),
        big: (large, []),
        f"{big}, all rows live": (large, ["--interactive-rows", "0"]),
    }
    results, sizes = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (path, options) in peers.items():
            if path not in sizes:
                logs = fusion.load_logs(path)
                sizes[path] = (logs.n_rows, logs.nbytes)
                del logs
            print(f"{name}: walking every page ...", flush=True)
            results[name] = walk(chromium, ["--logs", str(path), *options], args.budget,
                                 Path(scratch) / "server.log")

    names = list(peers)
    mib = 2 ** 20
    rows = {n: sizes[peers[n][0]][0] for n in names}
    nbytes = {n: sizes[peers[n][0]][1] for n in names}
    median_ms = {n: statistics.median(results[n]["slider_ms"]) for n in names}
    print()
    print(f"interactive sample above {INTERACTIVE_ROWS:,} rows (--interactive-rows); "
          "Data and Export always use every row")
    print(table(["", *names], [
        ["rows", *(f"{rows[n]:,}" for n in names)],
        ["LogSet size (MiB)", *(f"{nbytes[n] / mib:,.0f}" for n in names)],
        ["server peak resident memory (MiB)", *(f"{results[n]['peak'] / mib:,.0f}" for n in names)],
        *([f"{step} (s)", *(f"{results[n]['steps'][step]:.1f}" for n in names)]
          for step in results[names[0]]["steps"]),
        ["slider re-render, median of 10 (ms)", *(f"{median_ms[n]:.0f}" for n in names)],
        ["slider re-render, slowest (ms)", *(f"{max(results[n]['slider_ms']):.0f}" for n in names)],
    ]))
    small, sampled, whole = names
    extra = results[sampled]["peak"] - results[small]["peak"]
    print()
    print(f"peak memory, {sampled} / {small}: "
          f"{results[sampled]['peak'] / results[small]['peak']:.2f}x; extra peak per byte of "
          f"LogSet: {extra / nbytes[sampled]:.2f}x ({extra / mib:,.0f} MiB for "
          f"{nbytes[sampled] / mib:,.0f} MiB)")
    print(f"peak memory, {whole} / {sampled}: "
          f"{results[whole]['peak'] / results[sampled]['peak']:.2f}x")
    print(f"slider re-render median, {whole} / {sampled}: "
          f"{median_ms[whole] / median_ms[sampled]:.1f}x; {sampled} / {small}: "
          f"{median_ms[sampled] / median_ms[small]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Crash safety: SIGKILL during a command-line search and during config exports.

(tests/test_study.py already kills a library search; here it is the CLI, resumed by running
the same command again.)
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pty
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import fusion
from fusion import cli
from fusion.config import write_config
from tests.conftest import make_log_frame

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVES = "click:gauc,dwell:ndcg@10,like:gauc"
ALPHAS = "click=0.01,dwell=1,like=0.01"
BUDGET = 600


@pytest.fixture(scope="module")
def logs_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "logs.parquet"
    make_log_frame(400, seed=5, min_size=4, max_size=40,
                   objectives=("click", "dwell", "like")).to_parquet(path)
    return path


def search_argv(logs_path: Path, study: Path) -> list[str]:
    return ["search", str(logs_path), "--objectives", OBJECTIVES, "--alphas", ALPHAS,
            "--constraint", "like:gauc>=0.99*baseline", "--budget", str(BUDGET),
            "--seed", "1", "--study", str(study)]


def kill_mid_search(logs_path: Path, study: Path) -> int:
    """Start the CLI search and SIGKILL it as soon as it reports a stored batch short of the
    budget; return its exit status.

    The search runs on a pseudo-terminal so that it draws its progress bar, which it
    redraws after each batch is written to the study: a kill on progress, not on a timer,
    lands mid-search however fast the machine is.
    """
    terminal, child_side = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "fusion", *search_argv(logs_path, study)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=child_side)
    os.close(child_side)
    progress = re.compile(rb"([\d,]+)/" + f"{BUDGET:,}".encode())
    seen = b""
    try:
        deadline = time.monotonic() + 120
        while child.poll() is None:
            assert time.monotonic() < deadline, f"no progress within 120 s: {seen[-300:]!r}"
            if select.select([terminal], [], [], 0.05)[0]:
                try:
                    seen += os.read(terminal, 4096)
                except OSError:     # the child closed its side
                    continue
            done = [int(n.replace(b",", b"")) for n in progress.findall(seen)]
            if any(0 < n < BUDGET for n in done):
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.wait(timeout=60)
        os.close(terminal)
    return child.returncode


def comparable(result: fusion.SearchResult | pd.DataFrame) -> pd.DataFrame:
    frame = result if isinstance(result, pd.DataFrame) else result.candidates
    return frame.drop(columns=["elapsed_s"])


@pytest.mark.slow
def test_a_killed_cli_search_resumes_to_the_uninterrupted_front(logs_path, tmp_path):
    study = tmp_path / "killed.duckdb"
    assert kill_mid_search(logs_path, study) == -signal.SIGKILL
    partial = fusion.open_study(study)
    assert not partial.complete and len(partial.candidates) < BUDGET
    stored = len(partial.candidates)

    assert cli.main(search_argv(logs_path, study)) == 0          # the same command resumes
    resumed = fusion.open_study(study)
    whole = tmp_path / "whole.duckdb"
    assert cli.main(search_argv(logs_path, whole)) == 0
    uninterrupted = fusion.open_study(whole)
    assert resumed.complete and len(resumed.candidates) == BUDGET
    pd.testing.assert_frame_equal(comparable(resumed), comparable(uninterrupted))
    pd.testing.assert_frame_equal(comparable(resumed.front), comparable(uninterrupted.front))
    assert resumed.hypervolume == uninterrupted.hypervolume
    assert (resumed.knee_id, resumed.preferred_id) == (uninterrupted.knee_id,
                                                       uninterrupted.preferred_id)
    # The batches finished before the kill were kept as they were, not redone.
    pd.testing.assert_frame_equal(
        comparable(partial).drop(columns=["pareto_rank"]),
        comparable(resumed).iloc[:stored].drop(columns=["pareto_rank"]))


def _export_forever(configs: list[fusion.FusionConfig], path: Path, ready) -> None:
    """Alternate the two configs on ``path`` until killed (runs in a forked child)."""
    write_config(configs[0], path)
    ready.set()
    i = 0
    while True:
        i += 1
        write_config(configs[i % 2], path)


@pytest.fixture(scope="module")
def two_configs(logs_path) -> list[fusion.FusionConfig]:
    logs = fusion.load_logs(logs_path)
    alphas = {"click": 0.01, "dwell": 1.0, "like": 0.01}
    configs = []
    for name, weights in (("old", {"click": 0.7, "dwell": 0.2, "like": 0.1}),
                          ("new", {"click": 0.1, "dwell": 0.3, "like": 0.6})):
        formula = fusion.Formula.product(weights, alphas=alphas)
        configs.append(fusion.export_config(formula, logs, name=name,
                                            metrics=fusion.evaluate(logs, formula)))
    return configs


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_config_killed_mid_export_is_the_old_or_the_new_one(two_configs, tmp_path, suffix):
    path = tmp_path / f"fusion{suffix}"
    # NOTE: fork, so each of the 20 writers starts in milliseconds; the child only runs
    # write_config (no DuckDB, no numba), which is safe after a fork.
    context = multiprocessing.get_context("fork")
    rng = random.Random(0)
    seen = set()
    for attempt in range(20):
        ready = context.Event()
        child = context.Process(target=_export_forever, args=(two_configs, path, ready))
        child.start()
        try:
            assert ready.wait(30)
            time.sleep(rng.uniform(0.0, 0.05))
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.join(30)
        assert child.exitcode == -signal.SIGKILL
        text = path.read_text()
        config = fusion.load_config(path)          # parses and validates: never truncated
        assert config.to_dict() in [c.to_dict() for c in two_configs]  # NaN-safe equality
        raw = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
        assert raw == json.loads(json.dumps(config.to_dict()))   # every field, complete
        seen.add(config.name)
        # A kill between mkstemp and os.replace can leave a hidden temporary file; it never
        # has the config's name, so readers of the config never see it.
        for other in tmp_path.iterdir():
            assert other == path or (other.name.startswith(f".{path.name}.")
                                     and other.name.endswith(".tmp")), other
    assert seen == {"old", "new"}, seen   # the kills did land on both sides of a rename

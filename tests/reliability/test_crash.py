"""Crash safety: SIGKILL during a command-line search and during config exports.

(tests/test_study.py already kills a library search; here it is the CLI, resumed by running
the same command again.)
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
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


def kill_mid_search(logs_path: Path, study: Path, delay: float) -> int:
    """Start the CLI search, SIGKILL it ``delay`` s after the study file appears."""
    child = subprocess.Popen([sys.executable, "-m", "fusion", *search_argv(logs_path, study)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not study.exists():
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the search never created its study"
            time.sleep(0.01)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
        child.stderr.close()
    return child.returncode


def comparable(result: fusion.SearchResult | pd.DataFrame) -> pd.DataFrame:
    frame = result if isinstance(result, pd.DataFrame) else result.candidates
    return frame.drop(columns=["elapsed_s"])


@pytest.mark.slow
def test_a_killed_cli_search_resumes_to_the_uninterrupted_front(logs_path, tmp_path):
    study = tmp_path / "killed.duckdb"
    for delay in (1.0, 0.5, 0.2):   # shorter if the machine finished the search first
        for leftover in tmp_path.glob("killed.duckdb*"):
            leftover.unlink()
        assert kill_mid_search(logs_path, study, delay) == -signal.SIGKILL
        partial = fusion.open_study(study)
        if not partial.complete:
            break
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

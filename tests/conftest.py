"""Shared fixtures: small synthetic logs written to disk in every supported format."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def make_log_frame(
    n_requests: int = 40,
    *,
    seed: int = 0,
    min_size: int = 1,
    max_size: int = 30,
    objectives: tuple[str, ...] = ("click", "dwell"),
) -> pd.DataFrame:
    """A small log: ids, a slice, a timestamp, and a binary or graded objective per name.

    Objectives named ``dwell`` are graded (seconds); the others binary. Scores are rounded to
    two decimals so that ties are common.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_size, max_size + 1, size=n_requests)
    n = int(sizes.sum())
    frame = pd.DataFrame(
        {
            "request_id": np.repeat([f"r{i:04d}" for i in range(n_requests)], sizes),
            "user_id": np.repeat(rng.integers(0, max(2, n_requests // 3), size=n_requests), sizes),
            "item_id": rng.integers(0, 10 * n, size=n),
            "surface": rng.choice(["feed", "search", "related"], size=n),
            "ts": pd.Timestamp("2026-11-01") + pd.to_timedelta(rng.integers(0, 7 * 86400, n), "s"),
        }
    )
    for name in objectives:
        if name == "dwell":
            frame[f"pred_{name}"] = np.round(rng.gamma(2.0, 10.0, size=n), 2)
            frame[f"label_{name}"] = np.where(rng.random(n) < 0.3, rng.exponential(30.0, n), 0.0)
        else:
            frame[f"pred_{name}"] = np.round(rng.random(n), 2)
            frame[f"label_{name}"] = (rng.random(n) < frame[f"pred_{name}"]).astype(np.int64)
    return frame


@pytest.fixture
def log_frame() -> pd.DataFrame:
    return make_log_frame()


@pytest.fixture
def parquet_log(tmp_path: Path, log_frame: pd.DataFrame) -> Path:
    path = tmp_path / "logs.parquet"
    log_frame.to_parquet(path)
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium for the browser tests: a failure under ``CI=true`` if it is
    missing (``.ci/run`` installs it), a skip with the reason elsewhere."""
    path = shutil.which("chromium")
    if path is None:
        reason = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path

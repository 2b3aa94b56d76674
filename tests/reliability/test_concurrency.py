"""Eight dashboard sessions at once on the shared cached logs.

Each thread does what a session does through the app's cached state helpers: load the
sample with a slice filter, evaluate its own weights against the baseline, sample requests
and run a small search saved to its own study. Sessions must not see each other's state, every DuckDB
connection must stay on the thread that opened it, and each session's numbers must equal
what one session alone (the library called directly) gives.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pandas as pd
import pytest

import fusion
from app import state
from fusion.formulas import default_alphas

SESSIONS = 8
SURFACES = ("feed", "search")


class TrackedConnection:
    """A DuckDB connection that records every thread calling it."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, log: list) -> None:
        self._connection = connection
        self.threads: set[int] = set()
        log.append(self)

    def __getattr__(self, name):
        attribute = getattr(self._connection, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            self.threads.add(threading.get_ident())
            return attribute(*args, **kwargs)
        return call


@pytest.fixture
def tracked_connections(monkeypatch) -> list[TrackedConnection]:
    opened: list[TrackedConnection] = []
    real_connect = duckdb.connect

    def connect(*args, **kwargs):
        connection = TrackedConnection(real_connect(*args, **kwargs), opened)
        connection.threads.add(threading.get_ident())
        return connection
    monkeypatch.setattr(duckdb, "connect", connect)
    return opened


def one_session(i: int, study_dir: Path) -> dict:
    """What a session does through the app's cached helpers: load, filter, tune, search."""
    choice = state.sample_choice()
    where = [("surface", "in", [SURFACES[i % 2]])]
    logs = state.load(choice, where)
    weights = {o: 1.0 for o in logs.objectives} | {"click": 0.1 + 0.1 * i}
    formula = fusion.Formula.product(weights, alphas=default_alphas(logs))
    base = state.default_formula(logs, "product")
    table = state.evaluate(logs, formula, base).to_frame()
    sample = state.request_sample(logs, 200)
    result = fusion.search(sample, "product", objectives=[("click", "gauc"), ("like", "gauc")],
                           budget=20, seed=i % 2, study=study_dir / f"session{i}.duckdb",
                           alphas=formula.alphas)
    return {"where": where, "logs": logs, "formula": formula, "base": base, "table": table,
            "front": result.front, "sample": sample}


@pytest.mark.slow
def test_eight_sessions_share_the_cached_logs_without_leaks(tracked_connections, tmp_path):
    state._load_cached.clear()
    state._evaluate_cached.clear()
    state._request_sample_cached.clear()
    with ThreadPoolExecutor(SESSIONS) as pool:
        sessions = list(pool.map(one_session, range(SESSIONS), [tmp_path] * SESSIONS))
    # Every connection (the loader's and each study's) was only used by the thread that
    # opened it; sessions with the same filters share one loaded LogSet.
    assert all(len(c.threads) == 1 for c in tracked_connections), \
        [c.threads for c in tracked_connections]
    by_where = {}
    for session in sessions:
        by_where.setdefault(str(session["where"]), set()).add(id(session["logs"]))
    assert all(len(ids) == 1 for ids in by_where.values()), by_where

    for i, session in enumerate(sessions):
        logs = fusion.load_logs(state.SAMPLE_LOGS, where=session["where"])
        assert logs.fingerprint == session["logs"].fingerprint
        alone = fusion.evaluate(logs, session["formula"], metrics=list(state.METRICS),
                                baseline=session["base"]).to_frame()
        pd.testing.assert_frame_equal(session["table"], alone)   # its own formula, no leak
        sample = logs.sample_requests(200, seed=0)
        assert sample.fingerprint == session["sample"].fingerprint
        single = fusion.search(sample, "product", objectives=[("click", "gauc"),
                                                              ("like", "gauc")],
                               budget=20, seed=i % 2, alphas=session["formula"].alphas)
        columns = [c for c in single.front.columns if c != "elapsed_s"]
        pd.testing.assert_frame_equal(session["front"][columns], single.front[columns])

"""Loading logs: formats, schemas, filters, sampling, bad input and sandboxing."""

from __future__ import annotations

import numpy as np

import fusion


def test_parquet_loads_rows_ordered_by_request(parquet_log, log_frame):
    logs = fusion.load_logs(parquet_log)
    assert logs.objectives == ("click", "dwell")
    assert logs.n_rows == len(log_frame)
    assert logs.n_requests == log_frame["request_id"].nunique()
    assert list(logs.request_ids) == sorted(log_frame["request_id"].unique())
    sizes = log_frame.groupby("request_id").size().sort_index().to_numpy()
    np.testing.assert_array_equal(logs.request_sizes(), sizes)

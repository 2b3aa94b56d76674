"""The simulated feed: reproducible, streamed, and with the properties its README documents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusion
from fusion import explore
from fusion.sample import (
    FEED_SCHEMA,
    ITEM_CATEGORIES,
    MAX_CANDIDATES,
    MIN_CANDIDATES,
    _request_sizes,
    generate_feed,
    write_feed,
)

BUNDLED = Path(__file__).resolve().parents[1] / "sample_logs" / "feed_sample.parquet"
# Small but whole: two blocks of requests, models trained on a small split (fast).
SMALL = {"rows": 60_000, "train_rows": 5_000}


def _feed(seed: int = 0, chunk_rows: int = 7_000, **kwargs) -> pa.Table:
    options = dict(SMALL, **kwargs)
    return pa.concat_tables(generate_feed(seed=seed, chunk_rows=chunk_rows, **options))


# --- reproducibility and streaming ------------------------------------------------------------
@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> Path:
    return write_feed(tmp_path_factory.mktemp("feed") / "a.parquet", seed=3, **SMALL)


def test_same_seed_gives_the_same_bytes(small_file: Path, tmp_path: Path) -> None:
    again = write_feed(tmp_path / "b.parquet", seed=3, **SMALL)
    assert again == tmp_path / "b.parquet"
    assert small_file.read_bytes() == again.read_bytes()


def test_another_seed_gives_another_feed(small_file: Path, tmp_path: Path) -> None:
    other = pq.read_table(write_feed(tmp_path / "c.parquet", seed=4, **SMALL))
    first = pq.read_table(small_file)
    assert other.schema == first.schema
    for column in ("user_id", "item_id", "label_click", "pred_click"):
        assert not np.array_equal(other[column].to_numpy(), first[column].to_numpy())


def test_chunks_are_whole_requests_and_concatenate_to_the_one_shot_feed() -> None:
    chunks = list(generate_feed(seed=5, chunk_rows=7_000, **SMALL))
    one_shot = list(generate_feed(seed=5, chunk_rows=SMALL["rows"], **SMALL))
    assert len(one_shot) == 1 and len(chunks) > 5
    assert pa.concat_tables(chunks).equals(one_shot[0])
    # At least chunk_rows rows, at most one request more; each ends on a request boundary.
    assert all(7_000 <= chunk.num_rows < 7_000 + MAX_CANDIDATES for chunk in chunks[:-1])
    for before, after in zip(chunks, chunks[1:]):
        assert before["request_id"][-1].as_py() < after["request_id"][0].as_py()


def test_file_has_the_documented_columns_and_loads_with_four_objectives(small_file: Path) -> None:
    table = pq.read_table(small_file)
    assert table.schema.names == FEED_SCHEMA.names
    assert table.num_rows == SMALL["rows"]
    request = table["request_id"].to_numpy()
    assert np.all(np.diff(request) >= 0), "rows are sorted by request_id"
    logs = fusion.load_logs(small_file)
    assert logs.objectives == ("click", "dwell", "like", "conversion")
    assert [o.kind for o in logs.schema.objectives] == ["binary", "graded", "binary", "binary"]
    assert set(logs.slices) == {"surface", "user_segment", "item_category"}
    assert logs.request_sizes().min() >= MIN_CANDIDATES
    assert logs.request_sizes().max() <= MAX_CANDIDATES
    items = pd.DataFrame({"r": np.repeat(np.arange(logs.n_requests), logs.request_sizes()),
                          "i": logs.items.codes})
    assert not items.duplicated().any(), "no request holds an item twice"


def test_progress_reports_rows_written_up_to_the_total(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    write_feed(tmp_path / "p.parquet", seed=0, chunk_rows=20_000,
               progress=lambda done, total: calls.append((done, total)), **SMALL)
    assert len(calls) >= 3
    assert [total for _, total in calls] == [SMALL["rows"]] * len(calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == SMALL["rows"]


def test_a_failed_write_leaves_no_file_behind(tmp_path: Path) -> None:
    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_feed(tmp_path / "x.parquet", seed=0, chunk_rows=20_000, progress=stop, **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rows": 19}, "rows must be a whole number >= 20"),
        ({"rows": 100.0}, "rows must be a whole number"),
        ({"rows": 100, "seed": -1}, "seed must be a whole number >= 0"),
        ({"rows": 100, "chunk_rows": 0}, "chunk_rows"),
        ({"rows": 100, "items": 10}, "items must be a whole number >= 1000"),
    ],
)
def test_bad_settings_are_rejected_before_any_work(kwargs, message) -> None:
    with pytest.raises(fusion.FusionError, match=message):
        generate_feed(**kwargs)


def test_writing_into_a_missing_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(fusion.FusionError, match="does not exist"):
        write_feed(tmp_path / "missing" / "f.parquet", 100)


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(MIN_CANDIDATES, 5_000), seed=st.integers(0, 2**32 - 1))
def test_request_sizes_sum_to_rows_and_stay_within_20_to_100(rows: int, seed: int) -> None:
    sizes = _request_sizes(np.random.default_rng(seed), rows)
    assert sizes.sum() == rows
    assert sizes.min() >= MIN_CANDIDATES and sizes.max() <= MAX_CANDIDATES


def test_tiny_feeds_have_exact_row_counts() -> None:
    for rows in (20, 119):
        table = _feed(rows=rows)
        assert table.num_rows == rows
        sizes = pd.Series(table["request_id"].to_numpy()).value_counts()
        assert sizes.between(MIN_CANDIDATES, MAX_CANDIDATES).all()


# --- the bundled sample ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled() -> fusion.LogSet:
    return fusion.load_logs(BUNDLED)


@pytest.fixture(scope="module")
def bundled_frame() -> pd.DataFrame:
    return pd.read_parquet(BUNDLED)


def test_bundled_sample_is_small_and_sized_as_documented(bundled: fusion.LogSet) -> None:
    assert BUNDLED.stat().st_size < 8 * 2**20
    assert 180_000 <= bundled.n_rows <= 220_000
    assert 3_500 <= bundled.n_requests <= 4_500
    assert 2_500 <= bundled.n_users <= 3_500
    sizes = bundled.request_sizes()
    assert sizes.min() >= 20 and sizes.max() <= 100
    span = pd.Timestamp(bundled.ts.max()) - pd.Timestamp(bundled.ts.min())
    assert pd.Timedelta(days=6.9) < span <= pd.Timedelta(days=7)
    assert {"surface", "user_segment", "item_category"} <= set(bundled.slices)


def test_bundled_sample_is_what_the_documented_command_writes(
        tmp_path: Path, bundled_frame: pd.DataFrame) -> None:
    # README: python -m fusion sample --rows 200000 --out sample_logs/feed_sample.parquet --seed 0
    rebuilt = pd.read_parquet(write_feed(tmp_path / "feed.parquet", 200_000, seed=0))
    # NOTE: numpy's vectorised exp/log differ in the last bit between CPU generations (AVX2
    # vs AVX-512), which moves a model's float32 scores by an ulp; everything else is exact.
    scores = [c for c in bundled_frame.columns if c.startswith("pred_")]
    exact = [c for c in bundled_frame.columns if c not in scores]
    pd.testing.assert_frame_equal(rebuilt[exact], bundled_frame[exact])
    pd.testing.assert_frame_equal(rebuilt[scores], bundled_frame[scores], check_exact=False,
                                  rtol=1e-5, atol=1e-6)


def test_single_score_gaucs_are_plausible(bundled: fusion.LogSet) -> None:
    gauc = explore.single_score_gauc(bundled)
    assert 0.62 <= gauc["click"] <= 0.78
    for objective in ("dwell", "like", "conversion"):
        assert 0.6 <= gauc[objective] <= 0.85, objective


def test_objectives_conflict(bundled: fusion.LogSet) -> None:
    matrix = explore.score_label_matrix(bundled)
    own = np.diag(matrix.to_numpy())
    cost = own[np.newaxis, :] - matrix.to_numpy()  # row: ranked by; column: label
    np.fill_diagonal(cost, np.nan)
    assert np.count_nonzero(cost >= 0.02) >= 2
    # Each label is ranked best by its own score.
    assert np.all(np.nan_to_num(cost, nan=0.0) >= 0)


def test_some_labels_are_weakly_correlated_within_requests(bundled: fusion.LogSet) -> None:
    spearman = explore.within_request_spearman(bundled)
    labels = [o.label_column for o in bundled.schema.objectives]
    block = spearman.loc[labels, labels].to_numpy()
    upper = block[np.triu_indices(len(labels), k=1)]
    assert np.nanmin(upper) < 0.3


def test_labels_have_the_structure_of_a_feed(bundled_frame: pd.DataFrame) -> None:
    frame = bundled_frame
    clicked = frame["label_click"] == 1
    assert frame["label_conversion"].mean() < 0.02, "conversions are rare"
    assert clicked[frame["label_dwell"] > 0].mean() >= 0.85, "dwell mostly follows a click"
    assert clicked[frame["label_like"] == 1].mean() >= 0.85, "likes mostly follow a click"
    assert clicked[frame["label_conversion"] == 1].all()


def test_clickbait_and_niche_segments_behave_as_documented(bundled_frame: pd.DataFrame) -> None:
    frame = bundled_frame
    assert set(frame["item_category"].astype(str)) == set(ITEM_CATEGORIES)
    category = frame["item_category"].astype(str)
    bait, niche = category == "clickbait", category == "niche"
    rest = ~bait & ~niche
    clicked = frame["label_click"] == 1
    click_rate = frame["label_click"].mean()
    # Clickbait: many clicks, short dwell.
    assert frame.loc[bait, "label_click"].mean() > 1.5 * click_rate
    dwell = frame["label_dwell"]
    assert dwell[bait & clicked].median() < 0.3 * dwell[rest & clicked].median()
    # Niche: few clicks, but they convert.
    assert frame.loc[niche, "label_click"].mean() < 0.6 * click_rate
    assert frame.loc[niche, "label_conversion"].mean() > 1.5 * frame["label_conversion"].mean()
    conversion = frame["label_conversion"]
    assert conversion[niche & clicked].mean() > 3 * conversion[rest & clicked].mean()


def test_binary_scores_are_calibrated(bundled: fusion.LogSet) -> None:
    for objective in ("click", "like", "conversion"):
        base_rate = bundled.summary()["base_rate"][objective]
        assert explore.expected_calibration_error(bundled, objective) < 0.2 * base_rate, objective


def test_readme_figures_are_those_of_the_bundled_file(bundled: fusion.LogSet) -> None:
    readme = (BUNDLED.parent / "README.md").read_text(encoding="utf-8")
    assert f"| {bundled.n_rows:,} | {bundled.n_requests:,} | {bundled.n_users:,} |" in readme
    matrix = explore.score_label_matrix(bundled)
    for by in bundled.objectives:
        row = " | ".join(f"{value:.4f}" for value in matrix.loc[by])
        assert f"| {by} | {row} |" in readme, by

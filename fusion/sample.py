"""A realistic simulated recommender feed with predictions from small LightGBM models.

The simulation has latent users (taste vector, click/like/purchase propensities, a segment)
and items (taste vector, quality, popularity, a category). Requests of 20-100 candidates
come from users in proportion to their activity, on one of three surfaces, at a time of
day that follows a daily cycle over seven days. Labels have the structure of a real feed:

- a click depends on the user-item affinity, the item's quality and popularity, its category
  and the surface;
- dwell (seconds) and like mostly follow a click: a clicked item gets a log-normal dwell
  driven by quality and affinity, and a like whose odds grow with quality and dwell; a few
  unclicked items get a short preview dwell or a like from the card;
- a conversion needs a click and is rare; it is driven by the user's purchase intent and
  the surface;
- the ``clickbait`` category has a high click rate and short dwell, rarely liked or bought;
  the ``niche`` category gets few clicks but converts well.

Predicted scores come from LightGBM models (binary for click, like and conversion, a
regression for dwell seconds) trained on a separate simulated split. The models see only
noisy estimates of the latent factors (as an embedding store would hold them) plus the
popularity, category, surface and user segment, never a label. So the predictions are imperfect,
calibrated for the binary objectives, and the objectives genuinely conflict.

Everything is drawn from seeded streams keyed by purpose and by block of requests, so the
same seed gives the same rows whatever the chunk size, and memory stays flat for any number
of rows (bounded by the chunk size and the capped population).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import expit

from .errors import FusionError

OBJECTIVES: tuple[str, ...] = ("click", "dwell", "like", "conversion")
SURFACES: tuple[str, ...] = ("feed", "related", "search")
USER_SEGMENTS: tuple[str, ...] = ("new", "casual", "heavy")
ITEM_CATEGORIES: tuple[str, ...] = (
    "news", "sports", "entertainment", "lifestyle", "clickbait", "niche",
)
MIN_CANDIDATES = 20
MAX_CANDIDATES = 100
FEED_START = np.datetime64("2026-03-02T00:00:00", "us")  # a Monday
DEFAULT_CHUNK_ROWS = 250_000
DEFAULT_TRAIN_ROWS = 60_000

Progress = Callable[[int, int], None]

FEED_SCHEMA = pa.schema(
    [
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("ts", pa.timestamp("us")),
        ("surface", pa.dictionary(pa.int8(), pa.string())),
        ("user_segment", pa.dictionary(pa.int8(), pa.string())),
        ("item_category", pa.dictionary(pa.int8(), pa.string())),
        ("pred_click", pa.float32()),
        ("label_click", pa.int8()),
        ("pred_dwell", pa.float32()),
        ("label_dwell", pa.float32()),
        ("pred_like", pa.float32()),
        ("label_like", pa.int8()),
        ("pred_conversion", pa.float32()),
        ("label_conversion", pa.int8()),
    ]
)

# --- simulation constants (log-odds or log-seconds shifts) ----------------------------------
_TASTE_DIMS = 8
_SURFACE_SHARE = np.array([0.6, 0.25, 0.15])
_SURFACE_CLICK = np.array([0.0, 0.2, 0.5])
_SURFACE_CONVERSION = np.array([0.0, 0.3, 1.0])
_SEGMENT_SHARE = np.array([0.2, 0.55, 0.25])
_SEGMENT_REQUESTS = np.array([0.5, 1.0, 2.5])  # relative request rate
_SEGMENT_CLICK = np.array([-0.3, 0.0, 0.3])
_SEGMENT_LIKE = np.array([-0.6, 0.0, 0.4])
_SEGMENT_TASTE_NOISE = np.array([1.3, 0.8, 0.6])  # new users' tastes are least known
_CATEGORY_SHARE = np.array([0.2, 0.18, 0.25, 0.2, 0.09, 0.08])
_CATEGORY_CLICK = np.array([0.0, 0.0, 0.1, 0.0, 1.3, -1.0])
_CATEGORY_DWELL = np.array([0.1, 0.0, 0.1, 0.0, -2.0, 0.6])
_CATEGORY_LIKE = np.array([-0.2, 0.1, 0.2, 0.1, -1.2, -0.3])
_CATEGORY_CONVERSION = np.array([-0.8, -0.6, -0.4, 0.3, -1.5, 2.3])
_CLICK_BASE = -3.4
_DWELL_LOG_MEDIAN = np.log(25.0)
_LIKE_BASE = -3.2
_CONVERSION_BASE = -3.2
_PREVIEW_DWELL_RATE = 0.01  # unclicked items that still get a short dwell (autoplay, peek)
_CARD_LIKE_RATE = 0.002  # likes given from the card without opening the item
# Hourly traffic weights (local time): a night trough and an evening peak.
_HOURLY_TRAFFIC = np.array([3, 2, 1.5, 1, 1, 1.5, 3, 5, 6, 6, 6, 6.5,
                            7, 6.5, 6, 6, 6.5, 7.5, 9, 10, 10, 9, 7, 5], dtype=np.float64)
_WEEKDAY_TRAFFIC = np.array([1.0, 1.0, 1.0, 1.0, 1.05, 1.2, 1.25])  # Monday..Sunday: 7 days

_STREAM_POPULATION, _STREAM_SIZES, _STREAM_TRAIN, _STREAM_FEED, _STREAM_TRAIN_SIZES = range(5)
_BLOCK_REQUESTS = 1024  # unit of randomness: the feed is identical for any chunk size
_FEATURES = ("affinity", "item_quality", "item_popularity", "user_click", "user_like", "user_buy",
             "item_category", "surface", "user_segment")
_CATEGORICAL = [6, 7, 8]
_BOOSTER_PARAMS = {
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    # NOTE: one thread: on a small training set a second one saves little, and on a busy
    # machine OpenMP barriers in every boosting round can slow training tenfold.
    "num_threads": 1,
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
}
_BOOSTING_ROUNDS = 60
_PREDICT_THREADS = 2


@dataclasses.dataclass(frozen=True)
class _Population:
    """Latent users and items, and the noisy estimates of them that the models see."""

    user_segment: np.ndarray  # int8 (users,)
    user_taste: np.ndarray  # float32 (users, dims)
    user_click: np.ndarray
    user_like: np.ndarray
    user_buy: np.ndarray
    user_cumulative: np.ndarray  # float64 cumulative request share
    item_category: np.ndarray  # int8 (items,)
    item_taste: np.ndarray
    item_quality: np.ndarray
    item_popularity: np.ndarray  # centred log popularity
    item_cumulative: np.ndarray
    seen_user_taste: np.ndarray
    seen_user_click: np.ndarray
    seen_user_like: np.ndarray
    seen_user_buy: np.ndarray
    seen_item_taste: np.ndarray
    seen_item_quality: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Impressions:
    """One simulated stretch of requests: per-row latent context, labels and features."""

    user: np.ndarray
    item: np.ndarray
    surface: np.ndarray
    labels: dict[str, np.ndarray]
    features: np.ndarray  # float32 (rows, len(_FEATURES))


def _population(seed: int, users: int, items: int) -> _Population:
    rng = np.random.default_rng([seed, _STREAM_POPULATION])
    f32 = np.float32
    segment = rng.choice(len(USER_SEGMENTS), size=users, p=_SEGMENT_SHARE).astype(np.int8)
    user_taste = rng.standard_normal((users, _TASTE_DIMS)).astype(f32)
    user_click = (_SEGMENT_CLICK[segment] + 0.5 * rng.standard_normal(users)).astype(f32)
    user_like = (_SEGMENT_LIKE[segment] + 0.6 * rng.standard_normal(users)).astype(f32)
    user_buy = (0.8 * rng.standard_normal(users)).astype(f32)
    request_rate = _SEGMENT_REQUESTS[segment] * rng.lognormal(0.0, 0.6, users)
    category = rng.choice(len(ITEM_CATEGORIES), size=items, p=_CATEGORY_SHARE).astype(np.int8)
    item_taste = rng.standard_normal((items, _TASTE_DIMS)).astype(f32)
    quality = rng.standard_normal(items).astype(f32)
    log_popularity = rng.normal(0.0, 1.2, items)
    taste_noise = _SEGMENT_TASTE_NOISE[segment][:, None]
    return _Population(
        user_segment=segment,
        user_taste=user_taste,
        user_click=user_click,
        user_like=user_like,
        user_buy=user_buy,
        user_cumulative=_cumulative_share(request_rate),
        item_category=category,
        item_taste=item_taste,
        item_quality=quality,
        item_popularity=(log_popularity - log_popularity.mean()).astype(f32),
        item_cumulative=_cumulative_share(np.exp(log_popularity)),
        seen_user_taste=(user_taste + taste_noise * rng.standard_normal((users, _TASTE_DIMS))
                         ).astype(f32),
        seen_user_click=(user_click + 0.4 * rng.standard_normal(users)).astype(f32),
        seen_user_like=(user_like + 0.5 * rng.standard_normal(users)).astype(f32),
        seen_user_buy=(user_buy + 0.6 * rng.standard_normal(users)).astype(f32),
        seen_item_taste=(item_taste + 0.8 * rng.standard_normal((items, _TASTE_DIMS))).astype(f32),
        seen_item_quality=(quality + 0.8 * rng.standard_normal(items)).astype(f32),
    )


def _cumulative_share(weights: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(weights, dtype=np.float64)
    return cumulative / cumulative[-1]


def _draw(rng: np.random.Generator, cumulative: np.ndarray, size: int) -> np.ndarray:
    # Inverse-CDF sampling; the clip guards the float edge u == 1.0 after normalisation.
    drawn = np.searchsorted(cumulative, rng.random(size), side="right")
    return np.minimum(drawn, len(cumulative) - 1)


def _request_sizes(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Candidates per request: 20-100 (mean about 50) summing to exactly ``rows``."""
    span = MAX_CANDIDATES - MIN_CANDIDATES
    batch = rows // MIN_CANDIDATES + 1
    sizes = MIN_CANDIDATES + np.rint(span * rng.beta(1.5, 2.5, size=batch)).astype(np.int64)
    ends = np.cumsum(sizes)
    n = int(np.searchsorted(ends, rows, side="left")) + 1  # requests reaching at least `rows`
    sizes = sizes[:n].copy()
    sizes[-1] = rows - int(sizes[:-1].sum())
    if sizes[-1] < MIN_CANDIDATES and n > 1:
        # Too few left for a request: merge them into the one before or, if that would
        # exceed 100, move just enough candidates from it to make a smallest request.
        total = int(sizes[-2] + sizes[-1])
        if total <= MAX_CANDIDATES:
            return np.concatenate((sizes[:-2], [total]))
        sizes[-2:] = (total - MIN_CANDIDATES, MIN_CANDIDATES)
    return sizes


def _request_times(rng: np.random.Generator, first: int, count: int, total: int) -> np.ndarray:
    """Timestamps increasing with the request number, following the daily traffic cycle."""
    hourly = (_WEEKDAY_TRAFFIC[:, None] * _HOURLY_TRAFFIC[None, :]).ravel()
    cumulative = np.concatenate(([0.0], _cumulative_share(hourly)))
    quantile = (first + np.arange(count) + rng.random(count)) / total
    hour = np.minimum(np.searchsorted(cumulative, quantile, side="right") - 1, len(hourly) - 1)
    within = (quantile - cumulative[hour]) / (cumulative[hour + 1] - cumulative[hour])
    micros = ((hour + np.clip(within, 0.0, 1.0 - 1e-9)) * 3_600_000_000).astype(np.int64)
    return FEED_START + micros.astype("timedelta64[us]")


def _unique_items(rng: np.random.Generator, population: _Population,
                  request_of_row: np.ndarray) -> np.ndarray:
    """Candidates drawn by popularity, redrawn until no request holds an item twice."""
    n_items = len(population.item_cumulative)
    items = _draw(rng, population.item_cumulative, len(request_of_row))
    while True:
        key = request_of_row * n_items + items
        order = np.argsort(key, kind="stable")
        repeated = np.zeros(len(items), dtype=bool)
        repeated[order[1:]] = key[order[1:]] == key[order[:-1]]
        count = int(np.count_nonzero(repeated))
        if count == 0:
            return items
        items[repeated] = _draw(rng, population.item_cumulative, count)


def _simulate(rng: np.random.Generator, population: _Population, sizes: np.ndarray) -> _Impressions:
    n_requests = len(sizes)
    request_of_row = np.repeat(np.arange(n_requests, dtype=np.int64), sizes)
    n = len(request_of_row)
    request_user = _draw(rng, population.user_cumulative, n_requests)
    request_surface = rng.choice(len(SURFACES), size=n_requests, p=_SURFACE_SHARE).astype(np.int8)
    user = request_user[request_of_row]
    surface = request_surface[request_of_row]
    item = _unique_items(rng, population, request_of_row)
    category = population.item_category[item]
    segment = population.user_segment[user]
    quality = population.item_quality[item].astype(np.float64)
    affinity = _affinity(population.user_taste, population.item_taste, user, item)

    click_logit = (_CLICK_BASE + _SURFACE_CLICK[surface] + _CATEGORY_CLICK[category]
                   + population.user_click[user] + 0.9 * affinity + 0.35 * quality
                   + 0.25 * population.item_popularity[item])
    click = rng.random(n) < expit(click_logit)

    log_dwell = (_DWELL_LOG_MEDIAN + _CATEGORY_DWELL[category] + 0.7 * quality
                 + 0.3 * affinity + 0.7 * rng.standard_normal(n))
    preview = ~click & (rng.random(n) < _PREVIEW_DWELL_RATE)
    dwell = np.where(click, np.clip(np.exp(log_dwell), 1.0, 1800.0), 0.0)
    dwell = np.where(preview, rng.uniform(0.5, 4.0, n), dwell)
    dwell = np.round(dwell, 1)

    like_logit = (_LIKE_BASE + _SEGMENT_LIKE[segment] + _CATEGORY_LIKE[category]
                  + population.user_like[user] + 0.8 * quality + 0.5 * affinity
                  + 0.6 * (log_dwell - _DWELL_LOG_MEDIAN))
    like = ((click & (rng.random(n) < expit(like_logit)))
            | (~click & (rng.random(n) < _CARD_LIKE_RATE)))

    conversion_logit = (_CONVERSION_BASE + _SURFACE_CONVERSION[surface]
                        + _CATEGORY_CONVERSION[category] + population.user_buy[user]
                        + 0.3 * affinity)
    conversion = click & (rng.random(n) < expit(conversion_logit))

    features = np.empty((n, len(_FEATURES)), dtype=np.float32)
    features[:, 0] = _affinity(population.seen_user_taste, population.seen_item_taste, user, item)
    features[:, 1] = population.seen_item_quality[item]
    features[:, 2] = population.item_popularity[item]
    features[:, 3] = population.seen_user_click[user]
    features[:, 4] = population.seen_user_like[user]
    features[:, 5] = population.seen_user_buy[user]
    features[:, 6] = category
    features[:, 7] = surface
    features[:, 8] = segment
    labels = {
        "click": click.astype(np.int8),
        "dwell": dwell.astype(np.float32),
        "like": like.astype(np.int8),
        "conversion": conversion.astype(np.int8),
    }
    return _Impressions(user=user, item=item, surface=surface, labels=labels,
                        features=features)


def _affinity(user_taste: np.ndarray, item_taste: np.ndarray, user: np.ndarray,
              item: np.ndarray) -> np.ndarray:
    dot = np.einsum("ij,ij->i", user_taste[user], item_taste[item], dtype=np.float64)
    return dot / np.sqrt(_TASTE_DIMS)


@dataclasses.dataclass(frozen=True)
class _Models:
    """The per-objective models and the scale that turns the dwell model into seconds."""

    boosters: dict[str, lgb.Booster]
    dwell_scale: float

    def predict(self, name: str, features: np.ndarray) -> np.ndarray:
        predicted = self.boosters[name].predict(features, num_threads=_PREDICT_THREADS)
        if name == "dwell":
            predicted = self.dwell_scale * np.expm1(predicted)
        return np.maximum(predicted, 0.0)


def _train_models(seed: int, population: _Population, train_rows: int) -> _Models:
    """One small model per objective, trained on a separate simulated split.

    The dwell model is a squared-loss regression on log1p-seconds (on raw seconds the heavy
    tail dominates the loss and the ranking suffers); one scale, fitted on the training split,
    maps its back-transformed output to expected seconds. The scale is positive, so the order
    of the items is the log model's.
    """
    sizes = _request_sizes(np.random.default_rng([seed, _STREAM_TRAIN_SIZES]), train_rows)
    train = _simulate(np.random.default_rng([seed, _STREAM_TRAIN]), population, sizes)
    boosters = {}
    for name in OBJECTIVES:
        target = train.labels[name].astype(np.float32)
        if name == "dwell":
            target = np.log1p(target)
        objective = "regression" if name == "dwell" else "binary"
        params = dict(_BOOSTER_PARAMS, objective=objective, seed=seed)
        data = lgb.Dataset(train.features, label=target, feature_name=list(_FEATURES),
                           categorical_feature=_CATEGORICAL, params={"verbose": -1})
        boosters[name] = lgb.train(params, data, num_boost_round=_BOOSTING_ROUNDS)
    typical = np.expm1(boosters["dwell"].predict(train.features, num_threads=_PREDICT_THREADS))
    dwell_scale = float(train.labels["dwell"].mean(dtype=np.float64) / max(typical.mean(), 1e-9))
    return _Models(boosters=boosters, dwell_scale=dwell_scale)


def _check_whole(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FusionError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _default_users(rows: int) -> int:
    # About 3,000 distinct users in 200,000 rows; capped so memory stays flat for huge feeds.
    return int(np.clip(rows // 20, 50, 200_000))


def _default_items(rows: int) -> int:
    return int(np.clip(rows // 10, 1_000, 200_000))


def generate_feed(
    rows: int,
    *,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    users: int | None = None,
    items: int | None = None,
    train_rows: int = DEFAULT_TRAIN_ROWS,
) -> Iterator[pa.Table]:
    """Simulate a feed's prediction log, yielding Arrow tables of whole requests.

    Parameters
    ----------
    rows : int
        Impressions in total (>= 20); the last request absorbs the remainder so the count is
        exact and every request still has 20-100 candidates.
    seed : int
        Everything (population, request sizes, training split, models, feed) derives from it:
        the same seed gives the same rows for any ``chunk_rows``.
    chunk_rows : int
        Approximate rows per yielded table; a table always ends on a request boundary, so it
        can be larger by up to one request. Memory is bounded by this and the (capped)
        population sizes, not by ``rows``.
    users, items : int or None
        Population sizes; None scales them with ``rows`` (about 3,000 distinct users in
        200,000 rows), capped at 200,000 each.
    train_rows : int
        Rows of the separate simulated split the per-objective models are trained on.

    Returns
    -------
    iterator of pyarrow.Table
        Columns and types of :data:`FEED_SCHEMA`, rows sorted by ``request_id``. The
        settings are checked on the call; the work (training the models, then the feed)
        happens as the iterator is consumed.

    Raises
    ------
    FusionError
        A setting is not a whole number in its range.
    """
    rows = _check_whole("rows", rows, MIN_CANDIDATES)
    seed = _check_whole("seed", seed, 0)
    chunk_rows = _check_whole("chunk_rows", chunk_rows, 1)
    users = _default_users(rows) if users is None else _check_whole("users", users, 1)
    items = (_default_items(rows) if items is None
             else _check_whole("items", items, MAX_CANDIDATES * 10))
    train_rows = _check_whole("train_rows", train_rows, 1_000)
    return _generate(rows, seed, chunk_rows, users, items, train_rows)


def _generate(rows: int, seed: int, chunk_rows: int, users: int, items: int,
              train_rows: int) -> Iterator[pa.Table]:
    population = _population(seed, users, items)
    models = _train_models(seed, population, train_rows)
    sizes = _request_sizes(np.random.default_rng([seed, _STREAM_SIZES]), rows)
    blocks = (
        (_feed_block(seed, first // _BLOCK_REQUESTS, first, sizes[first:first + _BLOCK_REQUESTS],
                     len(sizes), population, models), sizes[first:first + _BLOCK_REQUESTS])
        for first in range(0, len(sizes), _BLOCK_REQUESTS)
    )
    yield from _rechunk(blocks, chunk_rows)


def _rechunk(blocks: Iterator[tuple[pa.Table, np.ndarray]], chunk_rows: int) -> Iterator[pa.Table]:
    """Regroup tables of whole requests into tables of at least ``chunk_rows`` rows.

    Each table ends at the first request boundary at or after ``chunk_rows`` rows (the last
    one holds what is left).
    """
    pending = FEED_SCHEMA.empty_table()
    pending_sizes = np.empty(0, dtype=np.int64)
    for table, sizes in blocks:
        pending = pa.concat_tables([pending, table])
        pending_sizes = np.concatenate((pending_sizes, sizes))
        ends = np.cumsum(pending_sizes)
        done, done_requests = 0, 0
        while ends[-1] - done >= chunk_rows:
            last = int(np.searchsorted(ends, done + chunk_rows, side="left"))
            yield pending.slice(done, int(ends[last]) - done)
            done, done_requests = int(ends[last]), last + 1
        pending = pending.slice(done)
        pending_sizes = pending_sizes[done_requests:]
    if pending.num_rows:
        yield pending


def _feed_block(seed: int, block: int, first: int, sizes: np.ndarray, total_requests: int,
                population: _Population, models: _Models) -> pa.Table:
    rng = np.random.default_rng([seed, _STREAM_FEED, block])
    impressions = _simulate(rng, population, sizes)
    request_ts = _request_times(rng, first, len(sizes), total_requests)
    request_id = np.arange(first + 1, first + len(sizes) + 1, dtype=np.int64)
    columns = {
        "request_id": np.repeat(request_id, sizes),
        "user_id": impressions.user.astype(np.int64) + 1,
        "item_id": impressions.item.astype(np.int64) + 1,
        "ts": np.repeat(request_ts, sizes),
        "surface": _dictionary(impressions.surface, SURFACES),
        "user_segment": _dictionary(population.user_segment[impressions.user], USER_SEGMENTS),
        "item_category": _dictionary(population.item_category[impressions.item], ITEM_CATEGORIES),
    }
    for name in OBJECTIVES:
        columns[f"pred_{name}"] = models.predict(name, impressions.features).astype(np.float32)
        columns[f"label_{name}"] = impressions.labels[name]
    return pa.table(columns, schema=FEED_SCHEMA)


def _dictionary(codes: np.ndarray, names: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int8()), pa.array(names))


def write_feed(
    out_path: str | Path,
    rows: int,
    *,
    seed: int = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Progress | None = None,
    users: int | None = None,
    items: int | None = None,
    train_rows: int = DEFAULT_TRAIN_ROWS,
) -> Path:
    """Write a simulated feed (see :func:`generate_feed`) to one Parquet file, streaming.

    Each chunk becomes a row group, so memory stays bounded by ``chunk_rows`` for any
    ``rows``. The file is written next to ``out_path`` and moved into place when complete,
    so a failed or interrupted run never leaves a partial file under that name.

    Parameters
    ----------
    out_path : str or Path
        Target Parquet file (its directory must exist).
    rows, seed, chunk_rows, users, items, train_rows
        As in :func:`generate_feed`; the same arguments give byte-identical content.
    progress : callable or None
        Called as ``progress(done_rows, total_rows)`` after each chunk is written.

    Returns
    -------
    Path
        ``out_path``.
    """
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise FusionError(f"cannot write {str(out_path)!r}: directory "
                          f"{str(out_path.parent)!r} does not exist")
    chunks = generate_feed(rows, seed=seed, chunk_rows=chunk_rows, users=users, items=items,
                           train_rows=train_rows)
    # A unique sibling name (not mkstemp, which would make the final file private to its owner).
    tmp_name = out_path.with_name(f".{out_path.name}.{secrets.token_hex(6)}.tmp")
    try:
        done = 0
        floats = [f"pred_{o}" for o in OBJECTIVES] + ["label_dwell"]
        with pq.ParquetWriter(str(tmp_name), FEED_SCHEMA, compression="zstd",
                              use_byte_stream_split=floats) as writer:
            for table in chunks:
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
                done += table.num_rows
                if progress is not None:
                    progress(done, rows)
        os.replace(tmp_name, out_path)
    except BaseException:
        tmp_name.unlink(missing_ok=True)
        raise
    return out_path

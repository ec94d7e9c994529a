"""Seeded synthetic CTR logs with known ground truth (`tfddn generate`).

The logs imitate the two data sets of Zeldes et al. (2018, Sec. 4) drawn from the
hidden `tfddn.marketplace.Marketplace`: targets (ads / articles) recommended in
contexts (publisher, publisher topic, device, optionally a browsing history).

* `regime="d1"`: many rows with few impressions each (lognormal, median ~4, about a
  quarter with n = 1), so the empirical CTR is dominated by measurement noise.
* `regime="d2"`: rows with high empirical significance (Pareto, n >= 300, median ~480).
* `regime="rare"`: like raw impression logs. The CTR is ~0.5% (d1/d2: ~3%), the
  context adds a `user_id` of user-level cardinality (`users`, Zipf: a few heavy
  users, most seen once or twice) and its `user_age_group`, both of which move the
  true CTR, and a pair-day has few impressions (geometric, 60% with n = 1, mean
  ~1.7). Grouped by all features, as `tfddn preprocess` does, about 84% of rows then
  have n = 1-2 and 99% no click, at either log level. The ground truth has one row
  per (target, age, publisher, device, user) tuple: nearly one per pair-day.

A row of an aggregated log is one sampled (target, context) pair on one day: `n`
impressions and `clicks ~ Binomial(n, ctr)` where `ctr = sigmoid(logit + sigma z)` is
that pair-day's realised CTR. An impression-level log expands the same pair-days into
one row per impression with a 0/1 `clicked` flag (exactly `clicks` of them), so both
log levels of one seed agree on every pair-day. Pair-days come in fixed blocks, each
with its own seeded generator, so the output does not depend on `chunk_rows`.

Files written to `out_dir`: `logs.{csv,jsonl,parquet}`, `spec.json` (a
`tfddn.spec.FeatureSpec`), `ground_truth.parquet` (one row per distinct feature tuple
with `true_ctr_mean`, `true_data_stddev` and, with history, `history_driver_position`)
and `world.json` (config, realised summary and per-feature true importance).

Example:
    >>> result = generate(GenerateConfig(out_dir="/tmp/m", rows=10_000), progress=False)
    >>> spec = tfddn.spec.load_spec(result.spec_path)
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from tfddn._hashing import hash_columns
from tfddn._logio import FORMATS, SeenKeys, TableSink, ValueNames
from tfddn._run_summary import RunSummary
from tfddn.marketplace import (HISTORY_BOOST, TITLE_MAX_WORDS, Marketplace, MarketplaceConfig,
                               Requests)
from tfddn.spec import Feature, FeatureSpec

__all__ = ["GenerateConfig", "GenerateResult", "build_spec", "generate", "sample_impressions"]

REGIMES = ("d1", "d2", "rare")
LOG_LEVELS = ("aggregated", "impressions")
_DAY = 86_400
_BLOCK_PAIRS = 16_384  # pair-days per seeded block (fixed: output independent of chunking)
_TRUTH_CHUNK_ROWS = 4 * _BLOCK_PAIRS  # fixed, so ground_truth.parquet ignores chunk_rows
_ID_MIN_COUNT = {"d1": 10, "d2": 1000, "rare": 10}  # training impressions for an embedding
_MEAN_CTR = {"d1": 0.03, "d2": 0.03, "rare": 0.005}  # mean true CTR over requests
_D1_MEDIAN, _D1_SIGMA, _D1_MAX = 3.5, 1.3, 100_000
_D2_MIN, _D2_ALPHA, _D2_MAX = 300, 1.5, 1_000_000
_RARE_P, _RARE_MAX = 0.6, 1_000  # geometric: P(n = k) = p (1 - p)^(k - 1)
_PRIME = 2_147_483_647  # > any n: j -> (P j + b) mod n permutes a pair-day's impressions


def _field(default, help: str, **extra):
    return dataclasses.field(default=default, metadata={"help": help, **extra})


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    """What to generate. Every field is a `tfddn generate --field` option."""

    out_dir: str = dataclasses.field(metadata={"help": "output directory (created)"})
    rows: int = _field(100_000, "log rows to write (impressions for log_level=impressions)")
    targets: int = _field(20_000, "targets (ads/articles) in the world")
    advertisers: int = _field(2_000, "advertisers owning the targets (long tail)")
    publishers: int = _field(500, "publishers (the context)")
    topics: int = _field(20, "topics shared by targets, publishers and articles")
    words: int = _field(2_000, "title word vocabulary size")
    days: int = _field(7, "days the logs span")
    regime: str = _field("d1", "d1: few impressions per row (noisy); d2: n >= 300 per row; "
                         "rare: CTR ~0.005, a user_id context, n = 1-2 per row",
                         choices=REGIMES)
    log_level: str = _field("aggregated", "aggregated rows (clicks, impressions) or one row "
                            "per impression (clicked)", choices=LOG_LEVELS)
    format: str = _field("csv", "log file format", choices=FORMATS)
    history: bool = _field(False, "add a browsing-history feature with a planted driver")
    history_length: int = _field(10, "articles in each browsing history")
    articles: int = _field(1_000, "articles that histories are drawn from")
    users: int = _field(100_000, "users (Zipf popularity) behind user_id; regime rare only")
    seed: int = _field(0, "random seed (same config -> byte-identical files)")
    chunk_rows: int = _field(100_000, "rows per write (bounds memory; does not change data)")
    start_timestamp: int = _field(1_767_225_600, "unix seconds of day 0 (2026-01-01 UTC)")

    def __post_init__(self):
        if not isinstance(self.out_dir, (str, os.PathLike)) or not os.fspath(self.out_dir):
            raise ValueError(f"out_dir must be a non-empty path. Received: "
                             f"out_dir={self.out_dir!r}")
        for name in ("rows", "targets", "advertisers", "publishers", "words", "days",
                     "history_length", "articles", "users", "chunk_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1. Received: {name}={value!r}")
        for name in ("seed", "start_timestamp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0. Received: {name}={value!r}")
        for name, allowed in (("regime", REGIMES), ("log_level", LOG_LEVELS),
                              ("format", FORMATS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}. "
                                 f"Received: {name}={getattr(self, name)!r}")
        if not isinstance(self.history, bool):
            raise ValueError(f"history must be a bool. Received: history={self.history!r}")
        self.world_config()  # validates topics, words and articles against each other

    def world_config(self) -> MarketplaceConfig:
        return MarketplaceConfig(
            targets=self.targets, advertisers=self.advertisers, publishers=self.publishers,
            topics=self.topics, words=self.words, articles=self.articles,
            history=self.history, history_length=self.history_length, seed=self.seed,
            mean_ctr=_MEAN_CTR[self.regime], users=self.users if self.regime == "rare" else 0)


@dataclasses.dataclass(frozen=True)
class GenerateResult:
    """Paths written by `generate` and the realised totals."""

    out_dir: str
    logs_path: str
    spec_path: str
    ground_truth_path: str
    world_path: str
    rows: int
    pairs: int
    impressions: int
    clicks: int
    ground_truth_rows: int
    seconds: float

    def summary(self) -> str:
        ctr = self.clicks / max(self.impressions, 1)
        return (f"wrote {self.rows:,} rows ({self.pairs:,} pair-days, {self.impressions:,} "
                f"impressions, {self.clicks:,} clicks, CTR {ctr:.4f}) in {self.seconds:.1f}s\n"
                f"  logs          {self.logs_path}\n  spec          {self.spec_path}\n"
                f"  ground truth  {self.ground_truth_path} ({self.ground_truth_rows:,} tuples)"
                f"\n  world         {self.world_path}")


def build_spec(config: GenerateConfig) -> FeatureSpec:
    """The feature spec of the generated logs (roles from `tfddn.spec`)."""
    ids = _ID_MIN_COUNT[config.regime]
    features = [
        Feature("target_id", "target_categorical", min_count=ids),
        Feature("advertiser_id", "target_categorical", min_count=ids),
        Feature("target_topic", "target_categorical", min_count=1),
        Feature("title", "target_tokens", min_count=ids, separator=" ",
                max_length=TITLE_MAX_WORDS),
        Feature("age_days", "target_numeric"),
        Feature("publisher_id", "context_categorical", min_count=ids),
        Feature("publisher_topic", "context_categorical", min_count=1),
        Feature("device", "context_categorical", min_count=1),
    ]
    if config.regime == "rare":
        features += [Feature("user_id", "context_categorical", min_count=ids),
                     Feature("user_age_group", "context_categorical", min_count=1)]
    if config.history:
        features.append(Feature("history", "history", min_count=ids, separator="|",
                                max_length=config.history_length))
    labels = ({"clicks": "clicks", "impressions": "impressions"}
              if config.log_level == "aggregated" else {"clicked": "clicked"})
    return FeatureSpec(features=tuple(features), log_format=config.log_level, cpc="cpc",
                       timestamp="timestamp", time_bucket_seconds=_DAY, name="marketplace",
                       **labels)


def sample_impressions(rng: np.random.Generator, size: int, regime: str) -> np.ndarray:
    """Impressions per pair-day of `regime`.

    d1: lognormal (median ~4, many 1s); d2: Pareto (>= 300, median ~480); rare:
    geometric with `p = 0.6` (60% n = 1, 84% n <= 2, mean ~1.7).
    """
    if regime == "d1":
        n = np.rint(np.exp(rng.normal(np.log(_D1_MEDIAN), _D1_SIGMA, size)))
        return np.clip(n, 1, _D1_MAX).astype(np.int64)
    if regime == "d2":
        n = np.floor(_D2_MIN * (1.0 - rng.random(size)) ** (-1.0 / _D2_ALPHA))
        return np.clip(n, _D2_MIN, _D2_MAX).astype(np.int64)
    if regime == "rare":
        return np.minimum(rng.geometric(_RARE_P, size), _RARE_MAX).astype(np.int64)
    raise ValueError(f"regime must be one of {list(REGIMES)}. Received: regime={regime!r}")


@dataclasses.dataclass
class _Block:
    req: Requests
    pair_index: np.ndarray  # global index of each pair-day
    second: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray

    def take(self, index) -> "_Block":
        return _Block(self.req.take(index), self.pair_index[index], self.second[index],
                      self.impressions[index], self.clicks[index])


def _sample_block(world: Marketplace, config: GenerateConfig, block: int) -> _Block:
    """Block `block` of the pair-day stream; identical for both log levels."""
    rng = np.random.default_rng([config.seed, 0xB10C, block])
    req = world.sample_requests(rng, _BLOCK_PAIRS, config.days)
    second = rng.integers(0, _DAY, _BLOCK_PAIRS)
    n = sample_impressions(rng, _BLOCK_PAIRS, config.regime)
    clicks = rng.binomial(n, world.realised_ctr(req))
    pair_index = block * _BLOCK_PAIRS + np.arange(_BLOCK_PAIRS, dtype=np.int64)
    return _Block(req, pair_index, second, n, clicks)


def _aggregated_table(config, names: ValueNames, b: _Block) -> pa.Table:
    ts = config.start_timestamp + b.req.day * _DAY + b.second
    cols = names.feature_columns(b.req)
    cols.update(clicks=pa.array(b.clicks, pa.int64()), impressions=pa.array(b.impressions),
                cpc=pa.array(names.world.target_cpc[b.req.target]), timestamp=pa.array(ts))
    return pa.table(cols)


def _impression_tables(config, names: ValueNames, b: _Block, total: int):
    """Expands pair-days into `total` impression rows, `chunk_rows` at a time."""
    ends = np.cumsum(b.impressions)
    offset = hash_columns(config.seed ^ 0xC11C, b.pair_index) % b.impressions.astype(np.uint64)
    for lo in range(0, total, config.chunk_rows):
        idx = np.arange(lo, min(lo + config.chunk_rows, total), dtype=np.int64)
        pair = np.searchsorted(ends, idx, side="right")
        j = idx - (ends[pair] - b.impressions[pair])
        n = b.impressions[pair]
        clicked = (_PRIME * j + offset[pair].astype(np.int64)) % n < b.clicks[pair]
        second = hash_columns(config.seed ^ 0x715E, b.pair_index[pair], j) % np.uint64(_DAY)
        req = b.req.take(pair)
        ts = config.start_timestamp + req.day * _DAY + second.astype(np.int64)
        cols = names.feature_columns(req)
        cols.update(clicked=pa.array(clicked.astype(np.int64)),
                    cpc=pa.array(names.world.target_cpc[req.target]), timestamp=pa.array(ts))
        yield pa.table(cols)


def _ground_truth_table(names: ValueNames, req: Requests, mean, std) -> pa.Table:
    cols = names.feature_columns(req)
    cols.update(true_ctr_mean=pa.array(mean), true_data_stddev=pa.array(std))
    if req.driver_position is not None:
        cols["history_driver_position"] = pa.array(req.driver_position.astype(np.int64))
    return pa.table(cols)


def generate(config: GenerateConfig, progress: bool = True) -> GenerateResult:
    """Writes the logs, `spec.json`, `ground_truth.parquet` and `world.json`.

    Pair-days are drawn in fixed seeded blocks and written `chunk_rows` at a time;
    distinct feature tuples are deduplicated with 64-bit hashes, so memory stays
    bounded at the paper's scale (10M rows, 1M targets, 10K publishers).

    Args:
        config: what to generate.
        progress: show a tqdm progress bar over the written rows.

    Returns:
        A `GenerateResult` with the paths written and the realised totals.
    """
    start = time.perf_counter()
    out_dir = os.fspath(config.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    world = Marketplace(config.world_config())
    names = ValueNames(world)
    spec = build_spec(config)
    paths = {k: os.path.join(out_dir, f) for k, f in (
        ("logs", f"logs.{config.format}"), ("spec", "spec.json"),
        ("ground_truth", "ground_truth.parquet"), ("world", "world.json"))}
    logs = TableSink(paths["logs"], config.format, config.chunk_rows, spec)
    truth = TableSink(paths["ground_truth"], "parquet", _TRUTH_CHUNK_ROWS)
    seen, summary = SeenKeys(), RunSummary(world)
    bar = tqdm(total=config.rows, unit="row", desc="generate", disable=not progress)
    block = 0
    while logs.total_rows < config.rows:
        b = _sample_block(world, config, block)
        block += 1
        remaining = config.rows - logs.total_rows
        if config.log_level == "aggregated":
            b = b.take(slice(0, min(remaining, _BLOCK_PAIRS)))
            logs.write(_aggregated_table(config, names, b))
            summary.add_rows(int(b.impressions.sum()), int(b.clicks.sum()))
            written = len(b.pair_index)
        else:
            ends = np.cumsum(b.impressions)
            used = min(int(np.searchsorted(ends, remaining)) + 1, _BLOCK_PAIRS)
            b = b.take(slice(0, used))
            written = min(remaining, int(ends[used - 1]))
            for table in _impression_tables(config, names, b, written):
                logs.write(table)
                summary.add_rows(table.num_rows, int(pc.sum(table["clicked"]).as_py()))
        mean, std = world.true_moments(world.logit(b.req), world.noise_stddev(b.req))
        summary.add_pairs(b.req, b.impressions, mean)
        keys = world.tuple_key(b.req)
        first = np.sort(np.unique(keys, return_index=True)[1])
        new = first[seen.add_new(keys[first])]
        if len(new):
            truth.write(_ground_truth_table(names, b.req.take(new), mean[new], std[new]))
        bar.update(written)
    bar.close()
    logs.close()
    truth.close()
    spec.save(paths["spec"])
    record = {"config": dataclasses.asdict(config),
              "world": {"base_logit": world.base_logit, "history_boost": HISTORY_BOOST,
                        "volatile_advertisers": int(world.advertiser_volatile.sum()),
                        "volatile_topics": [world.names("topic")[i] for i in
                                            np.flatnonzero(world.topic_volatile)]},
              **summary.to_dict(rows=logs.rows, ground_truth_rows=truth.rows)}
    with open(paths["world"], "w") as fh:
        json.dump(record, fh, indent=2, default=str)
        fh.write("\n")
    return GenerateResult(
        out_dir=out_dir, logs_path=paths["logs"], spec_path=paths["spec"],
        ground_truth_path=paths["ground_truth"], world_path=paths["world"], rows=logs.rows,
        pairs=summary.pairs, impressions=summary.impressions, clicks=summary.clicks,
        ground_truth_rows=truth.rows, seconds=time.perf_counter() - start)

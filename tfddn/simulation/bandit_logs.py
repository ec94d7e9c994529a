"""Logged bandit data whose logging policy and true policy values are known (`tfddn ope`).

`draw_bandit_logs` serves `requests` recommendations in the hidden world
(`tfddn.marketplace.Marketplace`, or the live pool of a `SimulationWorld` day):

* a context `x` is a (publisher, device) pair drawn with the world's traffic shares
  `P(x) = P(publisher) P(device)`;
* its candidates are `candidates` targets drawn by popularity, one set per publisher
  (`per_publisher`, key column `publisher_id`) or one set for all contexts;
* the logging policy is a softmax over a noisy estimate of the true logit mixed with
  uniform exploration, `pi_b(a|x) = (1 - eps) softmax((logit_xa + noise_xa) / temp)
  + eps / C`, whose exact value is logged as `propensity`;
* a click is Bernoulli with the pair's true expected CTR `q(x, a)` (`E_z[CTR]` of
  `Marketplace.true_moments`: no day noise, so `q` is the target).

The value of a target policy is then exact: `V(pi) = sum_x P(x) sum_a pi(a|x) q(x, a)`
(`BanditLogs.true_value`, with `pi` from `tfddn.ope_logs.score_contexts`).
`NoisyOracle` is a model that knows the world up to a known noise: a policy's "model"
without training.

Example:
    >>> bandit = draw_bandit_logs(Marketplace(MarketplaceConfig(targets=300)), seed=1)
    >>> scores = score_contexts(NoisyOracle(bandit), bandit.spec, bandit.contexts,
    ...                         bandit.candidates, Greedy(), bandit.context_key)
    >>> bandit.true_value(scores)["ctr"]
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.special import expit, logit, softmax

from tfddn._hashing import hash_columns, normal_from_hash
from tfddn._logio import ValueNames
from tfddn.generate import GenerateConfig, build_spec
from tfddn.marketplace import DEVICES, Marketplace, Requests
from tfddn.spec import FeatureSpec

__all__ = ["BanditLogs", "BanditLogsConfig", "NoisyOracle", "draw_bandit_logs"]

_DEVICE_PROBS = np.array([0.5, 0.4, 0.1])


@dataclasses.dataclass(frozen=True)
class BanditLogsConfig:
    """How the logs are drawn (module docstring)."""

    requests: int = 5000
    candidates: int = 10
    per_publisher: bool = True
    temperature: float = 0.5
    score_noise: float = 1.0
    epsilon: float = 0.2
    day: int = 0
    aggregate: bool = False

    def __post_init__(self):
        for name in ("requests", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        if not 0.0 < self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in (0, 1] (every candidate needs a propensity "
                             f"> 0). Received: epsilon={self.epsilon}")
        if self.temperature <= 0 or self.score_noise < 0 or self.day < 0:
            raise ValueError(f"temperature must be > 0, score_noise and day >= 0. Received: "
                             f"temperature={self.temperature}, score_noise="
                             f"{self.score_noise}, day={self.day}")


@dataclasses.dataclass(frozen=True, eq=False)
class BanditLogs:
    """Drawn logs and everything needed to know the truth.

    Attributes:
        logs: one row per logged recommendation (or per (context, target) when
            aggregated): the spec's features, `propensity`, `clicks`, `impressions`.
        candidates: target features, `cpc` (and `publisher_id` when per publisher).
        contexts: every context of the world: its features and `probability` P(x).
        spec: the feature spec of the columns.
        context_key: the candidates' key columns (`("publisher_id",)` or `()`).
        candidate_sets: per context, its rows of `candidates` (ascending).
        true_ctr: `[contexts, C]` `q(x, a)` of each context's candidates.
        market, day: the world and day the logs were drawn from.
    """

    logs: pd.DataFrame
    candidates: pd.DataFrame
    contexts: pd.DataFrame
    spec: FeatureSpec
    context_key: tuple[str, ...]
    candidate_sets: list
    true_ctr: np.ndarray
    market: Marketplace
    day: int

    def true_value(self, scores) -> dict[str, float]:
        """`{"ctr", "rpm"}` of the policy whose `pi(a|x)` over `contexts` is `scores`
        (`tfddn.ope_logs.score_contexts` of `self.contexts`, in order)."""
        if len(scores) != len(self.contexts) or not all(
                np.array_equal(s.candidates, rows) for s, rows in zip(scores, self.candidate_sets)):
            raise ValueError("scores must be score_contexts(..., self.contexts, "
                             "self.candidates, ...) with self.context_key.")
        pi = np.stack([s.probabilities for s in scores])
        p = self.contexts["probability"].to_numpy()
        cpc = self.candidates["cpc"].to_numpy()[np.stack(self.candidate_sets)]
        return {"ctr": float(p @ (pi * self.true_ctr).sum(1)),
                "rpm": float(1000 * p @ (pi * self.true_ctr * cpc).sum(1))}

    def write(self, out_dir: str, fmt: str = "parquet") -> dict[str, str]:
        """Writes `logs`, `candidates` (`.parquet`, `.jsonl` or `.csv`) and `spec.json`."""
        if fmt not in ("parquet", "jsonl", "csv"):
            raise ValueError(f"fmt must be parquet, jsonl or csv. Received: fmt={fmt!r}")
        os.makedirs(out_dir, exist_ok=True)
        paths = {name: os.path.join(out_dir, f"{name}.{fmt}") for name in ("logs", "candidates")}
        for name, path in paths.items():
            frame = getattr(self, name)
            if fmt == "parquet":
                frame.to_parquet(path)
            elif fmt == "jsonl":
                frame.to_json(path, orient="records", lines=True)
            else:  # token lists joined by the spec's separator, as the logs write them
                frame = frame.assign(**{f.name: frame[f.name].map(f.raw) for f in
                                        self.spec.features if f.is_sequence and f.name in frame})
                frame.to_csv(path, index=False)
        paths["spec"] = os.path.join(out_dir, "spec.json")
        self.spec.save(paths["spec"])
        return paths


def _requests(market: Marketplace, targets, publishers, devices, day: int) -> Requests:
    n = len(targets)
    return Requests(target=np.asarray(targets), publisher=np.asarray(publishers),
                    device=np.asarray(devices), day=np.full(n, day, dtype=np.int64))


def _frame(names: ValueNames, req: Requests, columns=None) -> pd.DataFrame:
    cols = names.feature_columns(req)
    frame = pa.table({k: v for k, v in cols.items() if columns is None or k in columns})
    return frame.to_pandas()


def draw_bandit_logs(world, config: BanditLogsConfig = BanditLogsConfig(),
                     seed: int = 0) -> BanditLogs:
    """Logs of `config.requests` recommendations in `world` (module docstring).

    Args:
        world: a `Marketplace` (every target may be a candidate) or a `SimulationWorld`
            (the targets live on `config.day`), without users or history.
        seed: seed of the candidates, the logging policy's noise, contexts and clicks.
    """
    market = getattr(world, "market", world)
    if market.config.history or market.config.users:
        raise ValueError("bandit logs need a world without history and users. Received: "
                         f"history={market.config.history}, users={market.config.users}")
    rng = np.random.default_rng([seed, 0x0BE])
    c, day = config, config.day
    pool = world.pool(day) if hasattr(world, "pool") else np.arange(market.config.targets)
    popularity = np.diff(np.concatenate([[0.0], market.target_cdf]))[pool]
    if c.candidates > len(pool):
        raise ValueError(f"candidates must be <= the {len(pool)} targets of the world. "
                         f"Received: candidates={c.candidates}")
    publishers = market.config.publishers
    groups = publishers if c.per_publisher else 1
    sets_of_group = np.stack([np.sort(rng.choice(pool, c.candidates, replace=False,
                                                 p=popularity / popularity.sum()))
                              for _ in range(groups)])                       # [G, C] targets
    names = ValueNames(market)
    spec = build_spec(GenerateConfig(out_dir="unused", rows=1))
    target_cols = [f.name for f in spec.features if f.tower == "target"]
    flat = sets_of_group.ravel()
    candidates = _frame(names, _requests(market, flat, np.zeros_like(flat), np.zeros_like(flat),
                                         day), target_cols)
    candidates["cpc"] = market.target_cpc[flat]
    context_key = ("publisher_id",) if c.per_publisher else ()
    if c.per_publisher:
        candidates["publisher_id"] = np.repeat(market.names("publisher"), c.candidates)
    # Contexts: every (publisher, device), publisher-major.
    ctx_pub = np.repeat(np.arange(publishers), len(DEVICES))
    ctx_dev = np.tile(np.arange(len(DEVICES)), publishers)
    publisher_probs = np.diff(np.concatenate([[0.0], market.publisher_cdf]))
    probability = publisher_probs[ctx_pub] * _DEVICE_PROBS[ctx_dev]
    contexts = _frame(names, _requests(market, np.zeros_like(ctx_pub), ctx_pub, ctx_dev, day),
                      [f.name for f in spec.features if f.tower == "context"])
    contexts["probability"] = probability / probability.sum()
    group = ctx_pub if c.per_publisher else np.zeros_like(ctx_pub)
    targets = sets_of_group[group]                                             # [X, C]
    shape = targets.shape
    req = _requests(market, targets.ravel(), np.repeat(ctx_pub, c.candidates),
                    np.repeat(ctx_dev, c.candidates), day)
    true_ctr = market.true_moments(market.logit(req), market.noise_stddev(req))[0].reshape(shape)
    noisy = logit(true_ctr) + c.score_noise * rng.standard_normal(shape)
    propensity = (1 - c.epsilon) * softmax(noisy / c.temperature, axis=1) + c.epsilon / shape[1]
    # Requests: a context by traffic share, a candidate by the logging policy, a click.
    x = rng.choice(len(probability), c.requests, p=contexts["probability"].to_numpy())
    u = rng.random(c.requests)[:, None]
    a = np.minimum((np.cumsum(propensity[x], axis=1) < u).sum(1), shape[1] - 1)
    clicks = (rng.random(c.requests) < true_ctr[x, a]).astype(np.int64)
    impressions = np.ones(c.requests, dtype=np.int64)
    if c.aggregate:
        pairs = pd.DataFrame({"x": x, "a": a, "clicks": clicks}).groupby(["x", "a"]).agg(
            clicks=("clicks", "sum"), impressions=("clicks", "size")).reset_index()
        x, a = pairs["x"].to_numpy(), pairs["a"].to_numpy()
        clicks, impressions = pairs["clicks"].to_numpy(), pairs["impressions"].to_numpy()
    logs = _frame(names, _requests(market, targets[x, a], ctx_pub[x], ctx_dev[x], day))
    logs = logs.assign(propensity=propensity[x, a], clicks=clicks, impressions=impressions,
                       cpc=market.target_cpc[targets[x, a]])
    offset = (group * c.candidates)[:, None]
    sets = list(offset + np.arange(c.candidates))
    return BanditLogs(logs, candidates, contexts, spec, context_key, sets, true_ctr, market, day)


class NoisyOracle:
    """A model that knows the world up to noise: `predict(spec, frame)` like
    `tfddn.candidation.LoadedModel`, with `ctr_mean = sigmoid(logit(q) + noise z)` where
    `q` is the true expected CTR and `z ~ N(0, 1)` a fixed hash of (seed, target,
    publisher, device); `data_stddev` is the true one, `model_stddev` the delta-method
    stddev `noise q (1 - q)` of that error.

    Args:
        bandit: the `BanditLogs` whose world (and day) the frames come from.
        noise: stddev of the error on the logit (0: the true CTR).
    """

    def __init__(self, bandit: BanditLogs, noise: float = 0.3, seed: int = 0):
        if noise < 0:
            raise ValueError(f"noise must be >= 0. Received: noise={noise}")
        self.market, self.day, self.noise, self.seed = bandit.market, bandit.day, noise, seed
        self._spec = bandit.spec
        self._index = {kind: {name: i for i, name in enumerate(self.market.names(kind))}
                       for kind in ("target", "publisher", "device")}

    def spec(self) -> FeatureSpec:
        """The spec of the logs' columns (as `LoadedModel.spec`)."""
        return self._spec

    def predict(self, spec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        idx = {kind: frame[column].astype(str).map(self._index[kind]).to_numpy(np.int64)
               for kind, column in (("target", "target_id"), ("publisher", "publisher_id"),
                                    ("device", "device"))}
        req = _requests(self.market, idx["target"], idx["publisher"], idx["device"], self.day)
        mean, stddev = self.market.true_moments(self.market.logit(req),
                                                self.market.noise_stddev(req))
        z = normal_from_hash(hash_columns(self.seed, idx["target"], idx["publisher"],
                                          idx["device"]))
        ctr = expit(logit(mean) + self.noise * z)
        return {"ctr_mean": ctr, "data_stddev": stddev,
                "model_stddev": self.noise * ctr * (1 - ctr)}

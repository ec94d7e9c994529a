"""The hidden world behind the synthetic logs: a seeded ad marketplace with known CTR.

Zeldes et al. (2018, Sec. 4) train on logs of a content marketplace where *targets*
(ads / recommended articles, owned by advertisers) are shown in *contexts* (the
publisher page and the request's device). This module builds such a world from a
seed so that every number the models estimate has a ground truth:

* Publishers (the context) have a fixed topic and a Zipf popularity; every request
  also has a device (desktop / mobile / tablet).
* Advertisers own targets with a long tail: a few own hundreds, most own one or two.
  Target popularity is Zipf too, so many targets are rare (they exercise OOV).
  A target has a topic (usually its advertiser's), a 3-8 word title drawn from a
  topic-correlated vocabulary, an age that grows by one every day, and a CPC.
* The true logit is non-linear with target x context interactions::

      logit = base + advertiser + target + publisher
              + affinity[target_topic, publisher_topic]
              + device_topic[device, target_topic]
              + title_effect * (0.5 + [target_topic == publisher_topic])
              + novelty(age) + history_boost
              [+ user + age_group_topic[age_group, target_topic]]

  `base` is calibrated so that the mean CTR over requests is `mean_ctr`.
* Data noise is heteroscedastic (the paper's *data uncertainty*): the realised CTR
  of a (target, context) pair on a day is `sigmoid(logit + sigma(x) z)`, with
  `sigma(x) = advertiser_sigma * topic_sigma * device_sigma` (volatile advertisers
  and topics, noisier mobile traffic) and `z ~ N(0, 1)` a deterministic hash of
  (seed, target, publisher, device, history, day[, user]), so impression-level and
  aggregated logs of one seed agree.
* Optional browsing history (Naor et al.): `history_length` article ids read
  before the request. At most one item is planted with the target's topic; when
  present it adds `HISTORY_BOOST` to the logit (its position is the ground truth
  for attention).
* Optional users (`users > 0`, the `rare` regime of `tfddn.generate`): every request
  also has a user drawn from a Zipf population, so a few heavy users repeat and most
  are seen once or twice. A user has a fixed age group (`AGE_GROUPS`); both enter
  the logit, `+ user + age_group_topic[age_group, target_topic]`.

The ground truth per feature tuple is `E_z[ctr]` and `Std_z[ctr]`, computed with
Gauss-Hermite quadrature (`true_moments`).

References:
    Zeldes et al., "Deep density networks and uncertainty in recommender systems",
    arXiv:1711.02487, Sec. 4. Naor et al., "Debugging large scale deep recommender
    systems using uncertainty estimations and attention".

Example:
    >>> world = Marketplace(MarketplaceConfig(targets=1000, advertisers=100))
    >>> req = world.sample_requests(np.random.default_rng(0), 5, days=7)
    >>> mean, std = world.true_moments(world.logit(req), world.noise_stddev(req))
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy.special import expit

from tfddn._hashing import hash_columns, normal_from_hash

__all__ = ["AGE_GROUPS", "DEVICES", "FEATURE_ATTRIBUTES", "HISTORY_BOOST", "Marketplace",
           "MarketplaceConfig", "Requests", "hash_columns", "normal_from_hash"]

DEVICES = ("desktop", "mobile", "tablet")
AGE_GROUPS = ("13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
HISTORY_BOOST = 1.0
TITLE_MAX_WORDS = 8
_DEVICE_PROBS = np.array([0.5, 0.4, 0.1])
_DEVICE_SIGMA = np.array([1.0, 1.6, 1.25])
_PLANT_PROB = 0.35
_GH_NODES = 40
_AGE_GROUP_PROBS = np.array([0.05, 0.2, 0.25, 0.2, 0.15, 0.1, 0.05])
_USER_ZIPF = 0.8  # the heaviest of 100K users makes ~2% of the requests
_USER_EFFECT_STDDEV = 0.5
_AGE_GROUP_TOPIC_STDDEV = 0.3
FEATURE_ATTRIBUTES = {
    "advertiser_id": ("advertiser",), "target_id": ("target",), "title": ("title",),
    "target_topic": ("target_topic",), "publisher_id": ("publisher",),
    "publisher_topic": ("publisher_topic",), "device": ("device",), "history": ("driver",),
    "user_id": ("user",), "user_age_group": ("age_group",),
}
"""Spec feature -> the world attributes it carries (`Marketplace.attributes`)."""


@functools.lru_cache(maxsize=None)
def _gauss_hermite(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1) for expectations over z ~ N(0, 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return x, w / w.sum()


def _zipf_cdf(rng: np.random.Generator, size: int, exponent: float) -> np.ndarray:
    """CDF of a Zipf popularity over `size` items whose ranks are shuffled."""
    weights = np.arange(1, size + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights[rng.permutation(size)])
    return cdf / cdf[-1]


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _in_topic(topic: np.ndarray, u: np.ndarray, total: int, topics: int) -> np.ndarray:
    """Item `topic + j * topics` (items are dealt round-robin to topics), j skewed to 0."""
    count = (total - topic + topics - 1) // topics
    return topic + (u ** 2 * count).astype(np.int64) * topics


@dataclasses.dataclass(frozen=True)
class MarketplaceConfig:
    """Size and seed of the hidden world (see the module docstring)."""

    targets: int = 20_000
    advertisers: int = 2_000
    publishers: int = 500
    topics: int = 20
    words: int = 2_000
    articles: int = 1_000
    history: bool = False
    history_length: int = 10
    seed: int = 0
    mean_ctr: float = 0.03
    users: int = 0  # 0: requests have no user

    def __post_init__(self):
        for name in ("targets", "advertisers", "publishers", "words", "articles",
                     "history_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        for name in ("seed", "users"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0. Received: {name}={getattr(self, name)}")
        if self.topics < 2:
            raise ValueError(f"topics must be >= 2. Received: topics={self.topics}")
        for name in ("words", "articles"):
            if getattr(self, name) < self.topics:
                raise ValueError(f"{name} must be >= topics ({self.topics}) so every topic "
                                 f"has one. Received: {name}={getattr(self, name)}")
        if not 0.0 < self.mean_ctr < 0.5:
            raise ValueError(f"mean_ctr must be in (0, 0.5). Received: mean_ctr={self.mean_ctr}")


@dataclasses.dataclass
class Requests:
    """A batch of (target, context) requests on given days, as indices into the world."""

    target: np.ndarray
    publisher: np.ndarray
    device: np.ndarray
    day: np.ndarray
    history: np.ndarray | None = None  # [n, history_length] article indices
    driver_position: np.ndarray | None = None  # -1: no planted item
    user: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.target)

    def take(self, index) -> "Requests":
        return Requests(**{f.name: None if getattr(self, f.name) is None
                           else getattr(self, f.name)[index]
                           for f in dataclasses.fields(self)})


class Marketplace:
    """The seeded world: per-entity arrays, request sampling and the true CTR."""

    def __init__(self, config: MarketplaceConfig):
        self.config = c = config
        rng = np.random.default_rng([c.seed, 0xD0D0])
        k = c.topics
        # Context: publishers with a fixed topic and Zipf popularity.
        self.publisher_topic = rng.integers(0, k, c.publishers)
        self.publisher_cdf = _zipf_cdf(rng, c.publishers, 1.0)
        self.publisher_effect = rng.normal(0.0, 0.35, c.publishers)
        # Advertisers: each owns one target, the rest go to a Zipf head (long tail).
        adv_topic = rng.integers(0, k, c.advertisers)
        first = rng.permutation(c.advertisers)[: min(c.advertisers, c.targets)]
        rest = _draw(_zipf_cdf(rng, c.advertisers, 1.1), rng.random(c.targets - len(first)))
        self.target_advertiser = rng.permutation(np.concatenate([first, rest]))
        self.advertiser_effect = rng.normal(0.0, 0.5, c.advertisers)
        self.advertiser_volatile = rng.random(c.advertisers) < 0.2
        self.advertiser_sigma = np.where(self.advertiser_volatile, 1.0, 0.2)
        # Targets.
        own = adv_topic[self.target_advertiser]
        self.target_topic = np.where(rng.random(c.targets) < 0.7, own,
                                     rng.integers(0, k, c.targets))
        self.target_cdf = _zipf_cdf(rng, c.targets, 0.8)
        self.target_effect = rng.normal(0.0, 0.5, c.targets)
        self.target_age0 = np.minimum(rng.exponential(30.0, c.targets), 3650).astype(np.int64)
        adv_price = rng.normal(0.0, 0.4, c.advertisers)[self.target_advertiser]
        cpc = np.exp(rng.normal(np.log(0.4) + adv_price, 0.5))
        self.target_cpc = np.maximum(np.round(cpc, 4), 0.01)
        # Titles: 3-8 words, 60% from the target's topic, the rest from a global head.
        self.title_length = rng.integers(3, TITLE_MAX_WORDS + 1, c.targets)
        shape = (c.targets, TITLE_MAX_WORDS)
        topical = _in_topic(self.target_topic[:, None], rng.random(shape), c.words, k)
        generic = (rng.random(shape) ** 3 * c.words).astype(np.int64)
        tokens = np.where(rng.random(shape) < 0.6, topical, generic)
        self.title_tokens = tokens.astype(np.int32)
        self.word_effect = (rng.normal(0.0, 0.1, c.words)
                            + (rng.random(c.words) < 0.1) * rng.normal(0.0, 0.8, c.words))
        mask = np.arange(TITLE_MAX_WORDS) < self.title_length[:, None]
        self.title_effect = ((self.word_effect[tokens] * mask).sum(1)
                             / np.sqrt(self.title_length))
        # Interactions and noise.
        self.topic_affinity = rng.normal(0.0, 0.35, (k, k)) + 0.8 * np.eye(k)
        self.device_topic = rng.normal(0.0, 0.3, (len(DEVICES), k))
        self.topic_volatile = rng.random(k) < 0.3
        self.topic_sigma = np.where(self.topic_volatile, 1.8, 1.0)
        self.article_topic = np.arange(c.articles) % k  # articles dealt round-robin
        self.device_cdf = np.cumsum(_DEVICE_PROBS)
        # Users: their own stream, so worlds without users are unchanged by them.
        urng = np.random.default_rng([c.seed, 0x05E7])
        self.user_cdf = _zipf_cdf(urng, c.users, _USER_ZIPF) if c.users else np.ones(0)
        self.user_effect = urng.normal(0.0, _USER_EFFECT_STDDEV, c.users)
        self.user_age_group = _draw(np.cumsum(_AGE_GROUP_PROBS), urng.random(c.users))
        self.age_group_topic = urng.normal(0.0, _AGE_GROUP_TOPIC_STDDEV, (len(AGE_GROUPS), k))
        self.base_logit = 0.0
        self.base_logit = self._calibrate_base(np.random.default_rng([c.seed, 0xCA1B]))

    # -- sampling ---------------------------------------------------------------

    def sample_requests(self, rng: np.random.Generator, n: int, days: int) -> Requests:
        """`n` requests: popular targets, publishers (and users) more often, a uniform day."""
        c = self.config
        req = Requests(target=_draw(self.target_cdf, rng.random(n)),
                       publisher=_draw(self.publisher_cdf, rng.random(n)),
                       device=_draw(self.device_cdf, rng.random(n)),
                       day=rng.integers(0, days, n))
        if c.history:
            length, k = c.history_length, c.topics
            topic = self.target_topic[req.target]
            other = (topic[:, None] + rng.integers(1, k, (n, length))) % k
            history = _in_topic(other, rng.random((n, length)), c.articles, k)
            planted = rng.random(n) < _PLANT_PROB
            position = rng.integers(0, length, n)
            driver = _in_topic(topic, rng.random(n), c.articles, k)
            rows = np.flatnonzero(planted)
            history[rows, position[rows]] = driver[rows]
            req.history = history
            req.driver_position = np.where(planted, position, -1)
        if c.users:
            req.user = _draw(self.user_cdf, rng.random(n))
        return req

    # -- the true CTR -----------------------------------------------------------

    def age_days(self, req: Requests) -> np.ndarray:
        return self.target_age0[req.target] + req.day

    def attributes(self, req: Requests) -> dict[str, np.ndarray]:
        """What the true CTR of each request depends on, one array per attribute.

        `FEATURE_ATTRIBUTES` says which attributes each spec feature carries: e.g. the
        `title` feature carries the title effect of the target, `target_topic` its
        topic (which enters the affinity, device and title terms and the noise).
        """
        out = {"advertiser": self.target_advertiser[req.target], "target": req.target,
               "title": req.target, "target_topic": self.target_topic[req.target],
               "publisher": req.publisher, "publisher_topic": self.publisher_topic[req.publisher],
               "device": req.device, "age": self.age_days(req)}
        if req.driver_position is not None:
            out["driver"] = req.driver_position >= 0
        if req.user is not None:
            out["user"] = req.user
            out["age_group"] = self.user_age_group[req.user]
        return out

    def logit_components(self, req: Requests) -> dict[str, np.ndarray]:
        """Each feature's additive share of the logit, keyed by feature name(s)."""
        return self._logit_components(self.attributes(req))

    def _logit_components(self, a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t_topic, p_topic, age = a["target_topic"], a["publisher_topic"], a["age"]
        match = (t_topic == p_topic).astype(np.float64)
        out = {
            "advertiser_id": self.advertiser_effect[a["advertiser"]],
            "target_id": self.target_effect[a["target"]],
            "publisher_id": self.publisher_effect[a["publisher"]],
            "target_topic*publisher_topic": self.topic_affinity[t_topic, p_topic],
            "device*target_topic": self.device_topic[a["device"], t_topic],
            "title": self.title_effect[a["title"]] * (0.5 + match),
            "age_days": 0.8 * np.exp(-age / 4.0) - 0.25 * np.log1p(age / 30.0),
        }
        if "driver" in a:
            out["history"] = HISTORY_BOOST * a["driver"]
        if "user" in a:
            out["user_id"] = self.user_effect[a["user"]]
            out["user_age_group*target_topic"] = self.age_group_topic[a["age_group"], t_topic]
        return out

    def logit(self, req: Requests) -> np.ndarray:
        return self.base_logit + sum(self.logit_components(req).values())

    def noise_components(self, req: Requests) -> dict[str, np.ndarray]:
        """Factors of `sigma(x)`, keyed by the feature that drives them."""
        return self._noise_components(self.attributes(req))

    def _noise_components(self, a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "advertiser_id": self.advertiser_sigma[a["advertiser"]],
            "target_topic": self.topic_sigma[a["target_topic"]],
            "device": _DEVICE_SIGMA[a["device"]],
        }

    def noise_stddev(self, req: Requests) -> np.ndarray:
        """`sigma(x)`: the std of the logit noise (heteroscedastic data uncertainty)."""
        return np.prod(list(self.noise_components(req).values()), axis=0)

    def marginal_moments(self, req: Requests, features, rng: np.random.Generator,
                         draws: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """True mean and stddev of the CTR when `features` are unknown (the oracle's OOV).

        The attributes the spec `features` carry (`FEATURE_ATTRIBUTES`) are replaced,
        together, by those of `draws` fresh requests (their population distribution,
        drawn independently of the rest of the request); the CTR's distribution is
        then the mixture over the draws of `sigmoid(logit + sigma z)`:
        `mean = E_draw[m]`, `var = E_draw[s^2] + Var_draw[m]` (law of total variance).
        With `features` empty this is `true_moments` of the request itself.

        This is the Bayes answer when the remaining features carry no information
        about the unknown ones. It is not when they do: the world's `title` and
        `advertiser_id` are functions of `target_id`, `publisher_topic` of
        `publisher_id`, so a model that sees the rest can recover them, and its
        ratio for such a feature alone should tend to 1 (see docs/RESULTS.md).
        A history's driver is redrawn as present with the planting probability.
        """
        unknown = [attr for name in features for attr in FEATURE_ATTRIBUTES[name]]
        base = self.attributes(req)
        n = len(req)
        if not unknown:
            return self.true_moments(self.base_logit + sum(self._logit_components(base).values()),
                                     np.prod(list(self._noise_components(base).values()), 0))
        other = self.attributes(self.sample_requests(rng, n * draws, days=1))
        mixed = {k: np.tile(v, draws) if k not in unknown else other[k]
                 for k, v in base.items()}
        logit = self.base_logit + sum(self._logit_components(mixed).values())
        sigma = np.prod(list(self._noise_components(mixed).values()), axis=0)
        mean, std = (v.reshape(draws, n) for v in self.true_moments(logit, sigma))
        total = mean.mean(axis=0)
        variance = (std ** 2).mean(axis=0) + mean.var(axis=0)
        return total, np.sqrt(variance)

    def history_key(self, req: Requests) -> np.ndarray:
        if req.history is None:
            return np.zeros(len(req), dtype=np.int64)
        return hash_columns(self.config.seed, *req.history.T).view(np.int64)

    @staticmethod
    def _user_columns(req: Requests) -> tuple[np.ndarray, ...]:
        return () if req.user is None else (req.user,)

    def realised_ctr(self, req: Requests) -> np.ndarray:
        """The CTR of each (pair, day): `sigmoid(logit + sigma z)`, z a hash of the key."""
        h = hash_columns(self.config.seed, req.target, req.publisher, req.device,
                         self.history_key(req), req.day, *self._user_columns(req))
        return expit(self.logit(req) + self.noise_stddev(req) * normal_from_hash(h))

    def tuple_key(self, req: Requests) -> np.ndarray:
        """A 64-bit id of the feature tuple the model sees (day enters through age)."""
        return hash_columns(self.config.seed ^ 0x7E57, req.target, self.age_days(req),
                            req.publisher, req.device, self.history_key(req),
                            *self._user_columns(req))

    @staticmethod
    def true_moments(logit: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`E_z` and `Std_z` of `sigmoid(logit + sigma z)` by Gauss-Hermite quadrature."""
        nodes, weights = _gauss_hermite(_GH_NODES)
        p = expit(np.asarray(logit)[:, None] + np.asarray(sigma)[:, None] * nodes)
        mean = p @ weights
        var = np.maximum((p * p) @ weights - mean ** 2, 0.0)
        return mean, np.sqrt(var)

    def _calibrate_base(self, rng: np.random.Generator, n: int = 8192) -> float:
        """Bisection on `base_logit` so that the mean true CTR is `mean_ctr`."""
        req = self.sample_requests(rng, n, days=7)
        rest, sigma = self.logit(req), self.noise_stddev(req)
        lo, hi = -15.0, 5.0
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            mean = self.true_moments(rest + mid, sigma)[0].mean()
            lo, hi = (mid, hi) if mean < self.config.mean_ctr else (lo, mid)
        return 0.5 * (lo + hi)

    # -- raw values -------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        """String values of `kind` in index order, e.g. `"t000123"`, `"adv0042"`, `"u000123"`."""
        c = self.config
        sizes = {"target": (c.targets, "t", 6), "advertiser": (c.advertisers, "adv", 4),
                 "publisher": (c.publishers, "pub", 4), "topic": (c.topics, "topic", 2),
                 "word": (c.words, "w", 4), "article": (c.articles, "a", 0),
                 "user": (c.users, "u", 6)}
        fixed = {"device": DEVICES, "age_group": AGE_GROUPS}
        if kind in fixed:
            return list(fixed[kind])
        if kind not in sizes:
            raise ValueError(f"unknown kind; one of {sorted([*sizes, *fixed])}. "
                             f"Received: kind={kind!r}")
        size, prefix, width = sizes[kind]
        width = max(width, len(str(size - 1))) if width else 0
        return [f"{prefix}{i:0{width}d}" for i in range(size)]

"""The simulated marketplace: the generator's world with daily turnover and traffic.

`tfddn.marketplace.Marketplace` fixes the true CTR of every (target, context) pair;
this module adds what a day-by-day simulation needs (Zeldes et al. 2018, Sec. 5: new
targets arrive all the time, which is why exploration pays):

* **Turnover.** Day 0 starts with `pool_size` live targets. Every day `arrivals =
  round(turnover * pool_size)` new targets arrive (age 0 on arrival) and each live
  target expires after a lifetime drawn from a geometric distribution with mean
  `1 / turnover` days, so the pool stays near `pool_size` and a target lives about
  a week at the default 15%.
* **Traffic.** A day has `requests_per_day` requests; each picks a publisher by the
  world's Zipf popularity and a device (desktop / mobile / tablet), so a *context*
  is a (publisher, device) pair. Every live target is a candidate for every request.
* **Budgets.** A target may get at most `budget` x its fair share of the day's
  impressions (requests x slots / pool size), as an advertiser's daily budget caps
  its spend; the simulator serves a day in `rounds` and drops spent targets between
  requests.
* **Outcome.** A shown (target, context) pair is clicked with the pair's realised CTR
  of that day, `sigmoid(logit + sigma(x) z)` (`Marketplace.realised_ctr`, the data
  noise), so clicks over `n` impressions are Binomial(n, realised CTR); the oracle
  knows the *expected* CTR `E_z[...]` (`Marketplace.true_moments`) and the CPC.

Example:
    >>> world = SimulationWorld(WorldConfig(pool_size=100), seed=0)
    >>> pool = world.pool(day=3)                   # live target indices
    >>> contexts, counts = world.traffic(day=3)    # [(publisher, device)], requests each
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfddn.marketplace import DEVICES, Marketplace, MarketplaceConfig, Requests

__all__ = ["SimulationWorld", "WorldConfig"]

_DEVICE_PROBS = np.array([0.5, 0.4, 0.1])
MAX_DAYS = 365
"""Horizon the world is built for: the world does not depend on how many days one
simulation runs, so a 2-day and a 14-day run of a seed share their first days."""


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Size of the simulated marketplace (the traffic of a few publishers)."""

    publishers: int = dataclasses.field(default=30, metadata={
        "help": "publishers sending traffic (contexts = publishers x 3 devices)"})
    pool_size: int = dataclasses.field(default=200, metadata={
        "help": "live candidate targets on a day"})
    turnover: float = dataclasses.field(default=0.15, metadata={
        "help": "share of the pool that arrives (and, on average, expires) every day"})
    requests_per_day: int = dataclasses.field(default=10_000, metadata={
        "help": "requests (one recommendation each) per day over all contexts"})
    budget: float = dataclasses.field(default=4.0, metadata={
        "help": "daily impression budget of a target, as a multiple of its fair share "
                "(requests x slots / pool_size); 0: unlimited"})
    rounds: int = dataclasses.field(default=24, metadata={
        "help": "rounds a day is served in (budgets are checked between requests batches)"})
    advertisers: int = dataclasses.field(default=300, metadata={"help": "advertisers"})
    topics: int = dataclasses.field(default=12, metadata={"help": "topics"})

    def __post_init__(self):
        for name in ("publishers", "pool_size", "requests_per_day", "advertisers", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        if not 0.0 < self.turnover <= 1.0:
            raise ValueError(f"turnover must be in (0, 1]. Received: turnover={self.turnover}")
        if self.budget < 0:
            raise ValueError(f"budget must be >= 0. Received: budget={self.budget}")
        if self.topics < 2:
            raise ValueError(f"topics must be >= 2. Received: topics={self.topics}")


class SimulationWorld:
    """A `Marketplace` whose targets arrive and expire day by day (module docstring)."""

    def __init__(self, config: WorldConfig, seed: int = 0, days: int = 14):
        if not 0 <= days <= MAX_DAYS:
            raise ValueError(f"days must be in [0, {MAX_DAYS}]. Received: days={days}")
        self.config = c = config
        self.seed = seed
        self.arrivals = max(1, round(c.turnover * c.pool_size))
        targets = c.pool_size + self.arrivals * (MAX_DAYS + 1)
        self.market = Marketplace(MarketplaceConfig(
            targets=targets, advertisers=c.advertisers, publishers=c.publishers,
            topics=c.topics, words=max(500, 20 * c.topics), articles=max(100, c.topics),
            seed=seed))
        rng = np.random.default_rng([seed, 0x5171])
        # Arrival day of every target (-1: live before day 0) and its last live day.
        self.birth = np.concatenate([np.full(c.pool_size, -1),
                                     np.repeat(np.arange(MAX_DAYS + 1), self.arrivals)])
        lifetime = rng.geometric(c.turnover, targets)
        self.last_day = self.birth + lifetime  # geometric: memoryless for the day-0 pool too
        # New targets are new: age 0 on arrival (the world's ages are for old targets).
        born = self.birth >= 0
        self.market.target_age0 = np.where(born, -self.birth, self.market.target_age0)

    def pool(self, day: int) -> np.ndarray:
        """Indices of the targets live on `day`, ascending."""
        return np.flatnonzero((self.birth <= day) & (self.last_day >= day))

    def daily_budget(self, slots: int) -> float:
        """Impressions a target may get per day (`inf` without budgets)."""
        if self.config.budget == 0:
            return float("inf")
        fair = self.config.requests_per_day * slots / self.config.pool_size
        return self.config.budget * fair

    def traffic(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        """`(contexts [M, 2] of (publisher, device), requests [M])` of `day`, M <= P x 3.

        Only contexts with at least one request are returned.
        """
        rng = np.random.default_rng([self.seed, 0x7AFF, day])
        publisher_probs = np.diff(np.concatenate([[0.0], self.market.publisher_cdf]))
        probs = (publisher_probs[:, None] * _DEVICE_PROBS[None, :]).ravel()
        counts = rng.multinomial(self.config.requests_per_day, probs / probs.sum())
        keep = np.flatnonzero(counts)
        contexts = np.stack([keep // len(DEVICES), keep % len(DEVICES)], axis=1)
        return contexts, counts[keep]

    def requests(self, targets: np.ndarray, publishers: np.ndarray, devices: np.ndarray,
                 day: int) -> Requests:
        """The world's `Requests` for (target, publisher, device) rows on `day`."""
        n = len(targets)
        return Requests(target=np.asarray(targets), publisher=np.asarray(publishers),
                        device=np.asarray(devices), day=np.full(n, day, dtype=np.int64))

    def expected_ctr(self, req: Requests) -> np.ndarray:
        """`E_z[CTR]`: what an oracle that knows the world expects (no day noise)."""
        return self.market.true_moments(self.market.logit(req),
                                        self.market.noise_stddev(req))[0]

    def realised_ctr(self, req: Requests) -> np.ndarray:
        """The CTR of each pair on its day (data noise included): clicks are drawn from it."""
        return self.market.realised_ctr(req)

    def cpc(self, targets: np.ndarray) -> np.ndarray:
        return self.market.target_cpc[targets]

"""Exploration policies: rank a context's candidate targets by expected revenue.

A policy sees a model's predictions for the C candidate targets of one context
(`CandidatePredictions`: predicted CTR, its uncertainties, the CPC and optionally the
packed mixture parameters of T MC-dropout passes) and returns one ranked list of
`slots` distinct candidates per request. Every score is a CTR times the CPC, so lists
are ordered by (optimistic or sampled) expected revenue per impression:

- `Greedy`: `mean x cpc`, pure exploitation.
- `UCB`: `(mean + c * stddev) x cpc`, optimism in the face of uncertainty with the
  model's own stddev (Zeldes et al. 2018, Sec. 4; Auer et al. 2002); `stddev` picks
  data, model or total (`sqrt(data^2 + model^2)`) uncertainty.
- `Thompson`: one CTR drawn per request and candidate from the predictive
  distribution (a uniformly chosen MC pass, a component of its mixture, a Gaussian
  draw clipped to [0, 1]) times the CPC (Chapelle & Li 2011).
- `EpsilonGreedy`: a uniformly random list with probability epsilon, else greedy.
- `Random`: uniformly random lists.

Ties are broken by the lowest candidate index (`top_n`), for every policy.

References:
    Zeldes, Theodorakis, Solodnik, Rotman, Chamiel, Friedman. "Deep density networks
    and uncertainty in recommender systems", 2018. arXiv:1711.02487.
    Auer, Cesa-Bianchi, Fischer. "Finite-time analysis of the multiarmed bandit
    problem", Machine Learning 47, 2002.
    Chapelle, Li. "An empirical evaluation of Thompson sampling", NIPS 2011.

Example:
    >>> parts = tfddn.uncertainty.decompose(model, features, model_config)
    >>> predictions = CandidatePredictions.from_decomposition(parts, cpc)
    >>> policy = make_policy(PolicyConfig(name="ucb", c=1.0))
    >>> lists = policy.select(predictions, requests=1000, rng=np.random.default_rng(0))
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from tfddn.distributions import FAMILIES, Mixture

__all__ = [
    "POLICY_NAMES",
    "STDDEV_KINDS",
    "UCB",
    "CandidatePredictions",
    "EpsilonGreedy",
    "Greedy",
    "Policy",
    "PolicyConfig",
    "PosteriorThompson",
    "PosteriorUCB",
    "Random",
    "Thompson",
    "make_policy",
    "top_n",
]

STDDEV_KINDS = ("total", "data", "model")
POLICY_NAMES = ("greedy", "ucb", "thompson", "epsilon_greedy", "random", "posterior_ts",
                "posterior_ucb")


@dataclasses.dataclass(frozen=True, eq=False)
class CandidatePredictions:
    """A model's predictions for C candidate targets in one context.

    Args:
        ctr_mean: `[C]` predicted CTR (mean over MC passes).
        data_stddev: `[C]` data uncertainty, >= 0 (0 for REG).
        model_stddev: `[C]` MC-dropout model uncertainty, >= 0 (0 without dropout).
        cpc: `[C]` revenue per click, >= 0.
        mixture: optional `[T, C, 3K]` packed mixture params `concat(logits, means,
            scales)` of T MC passes (T = 1: the deterministic pass); None for REG.
        num_components: K.
        family: "gaussian" (scales are stddevs; MDN / DDN) or "beta" (scales are
            concentrations; BBDDN), see `tfddn.distributions`.
        clicks, impressions: optional `[C]` counts each candidate collected in this
            context since the model's data ends (evidence for the posterior policies;
            fractional when discounted, `tfddn.posterior.discounted`); None: no evidence
            (the posterior is the prior).
        prior_mixture: optional precomputed `prior()` (`[C, K']` Beta `Mixture`), e.g.
            once per day and context in the simulator; the strength is still applied.
        prior_strength: the prior's concentrations are multiplied by this before the
            update (`Mixture.with_strength`; fitted by `tfddn.posterior.fit_evidence`);
            1: the model's stddev at face value.

    Arrays are converted to float64 and validated; instances compare by identity.
    """

    ctr_mean: np.ndarray
    data_stddev: np.ndarray
    model_stddev: np.ndarray
    cpc: np.ndarray
    mixture: np.ndarray | None = None
    num_components: int = 1
    family: str = "gaussian"
    clicks: np.ndarray | None = None
    impressions: np.ndarray | None = None
    prior_strength: float = 1.0
    prior_mixture: Mixture | None = None

    def __post_init__(self):
        size = None
        for field in ("ctr_mean", "data_stddev", "model_stddev", "cpc"):
            value = np.asarray(getattr(self, field), dtype=np.float64)
            if value.ndim != 1 or (size is not None and value.shape[0] != size):
                raise ValueError(f"{field} must have shape [C] like ctr_mean. "
                                 f"Received: {field}.shape={value.shape}")
            size = value.shape[0]
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{field} must be finite. Received: {field}={value}")
            if field != "ctr_mean" and np.any(value < 0):
                raise ValueError(f"{field} must be >= 0. Received: {field}={value}")
            object.__setattr__(self, field, value)
        if size == 0:
            raise ValueError("CandidatePredictions needs at least one candidate. "
                             "Received: ctr_mean.shape=(0,)")
        if (self.clicks is None) != (self.impressions is None):
            raise ValueError("clicks and impressions come together (both or neither).")
        if self.clicks is not None:
            for field in ("clicks", "impressions"):
                value = np.asarray(getattr(self, field), dtype=np.float64)
                if value.shape != (size,) or not np.all(np.isfinite(value)) or np.any(value < 0):
                    raise ValueError(f"{field} must be finite counts >= 0 of shape [C={size}]. "
                                     f"Received: {field}={value}")
                object.__setattr__(self, field, value)
            if np.any(self.clicks > self.impressions):
                raise ValueError("clicks must be <= impressions for every candidate.")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}. Received: family={self.family!r}")
        if not (isinstance(self.prior_strength, (int, float, np.number))
                and math.isfinite(self.prior_strength) and self.prior_strength > 0):
            raise ValueError(f"prior_strength must be a finite number > 0. "
                             f"Received: prior_strength={self.prior_strength!r}")
        k = self.num_components
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"num_components must be an integer >= 1. "
                             f"Received: num_components={k!r}")
        if self.prior_mixture is not None and (
                not isinstance(self.prior_mixture, Mixture) or self.prior_mixture.family != "beta"
                or self.prior_mixture.weights.shape[:-1] != (size,)):
            raise ValueError(f"prior_mixture must be a Beta Mixture of shape [C={size}, K]. "
                             f"Received: {self.prior_mixture!r}")
        if self.mixture is not None:
            mixture = np.asarray(self.mixture, dtype=np.float64)
            if mixture.ndim != 3 or mixture.shape[0] < 1 or mixture.shape[1:] != (size, 3 * k):
                raise ValueError(f"mixture must have shape [T, C={size}, 3K={3 * k}]. "
                                 f"Received: mixture.shape={mixture.shape}")
            if not np.all(np.isfinite(mixture)):
                raise ValueError("mixture must be finite. Received non-finite values.")
            if np.any(mixture[..., 2 * k:] < 0):
                raise ValueError("mixture scales (the last K params) must be >= 0.")
            object.__setattr__(self, "mixture", mixture)

    def posterior(self) -> Mixture:
        """`[C, T*K]` Beta mixture of each candidate's true CTR given its counts.

        The prior is the model's predictive distribution: the equal-weight mixture of the
        T MC-dropout passes' mixtures (Gaussian components moment-matched to Betas), or
        for REG one Beta with `ctr_mean` and `total_stddev`. `Mixture.posterior` updates it
        exactly with the counts.
        """
        prior = self.prior()
        if self.prior_strength != 1.0:
            prior = prior.with_strength(self.prior_strength)
        zeros = np.zeros(self.num_candidates)
        return prior.posterior(zeros if self.clicks is None else self.clicks,
                               zeros if self.impressions is None else self.impressions)

    def prior(self) -> Mixture:
        """`[C, T*K]` the model's predictive distribution before counts and strength: the
        equal-weight mixture of the T passes' mixtures, or for REG (no mixture) the Beta
        with `ctr_mean` and `total_stddev` (Gaussian components moment-matched to Betas)."""
        if self.prior_mixture is not None:
            return self.prior_mixture
        if self.mixture is None:
            return Mixture(np.ones((self.num_candidates, 1)), self.ctr_mean[:, None],
                           np.maximum(self.total_stddev, 1e-6)[:, None]).to_beta()
        return Mixture.from_params(self.mixture, self.num_components,
                                   self.family).flatten_passes().to_beta()

    @property
    def num_candidates(self) -> int:
        """C."""
        return self.ctr_mean.shape[0]

    @property
    def total_stddev(self) -> np.ndarray:
        """`sqrt(data^2 + model^2)`, the predictive stddev of the true CTR."""
        return np.hypot(self.data_stddev, self.model_stddev)

    @classmethod
    def from_decomposition(cls, parts: dict[str, Any], cpc, mixture=None,
                           num_components: int = 1,
                           family: str = "gaussian") -> CandidatePredictions:
        """From `tfddn.uncertainty.decompose` output (numpy arrays or tf tensors).

        `mixture` may be `tfddn.uncertainty.mc_dropout_params(...)` of a density model.
        """
        missing = {"ctr_mean", "data_stddev", "model_stddev"} - set(parts)
        if missing:
            raise ValueError(f"parts is missing {sorted(missing)}. Received keys: "
                             f"{sorted(parts)}")
        return cls(ctr_mean=np.asarray(parts["ctr_mean"]),
                   data_stddev=np.asarray(parts["data_stddev"]),
                   model_stddev=np.asarray(parts["model_stddev"]),
                   cpc=np.asarray(cpc),
                   mixture=None if mixture is None else np.asarray(mixture),
                   num_components=num_components, family=family)


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` highest scores, best first, along the last axis.

    Linear-time selection (`np.partition` finds the n-th largest value), then a stable
    sort of the n winners; ties go to the lowest index, also at the cut-off.

    Args:
        scores: `[C]` or `[R, C]` scores, no NaN.
        n: 1 <= n <= C.

    Returns:
        int64 indices of shape `[n]` or `[R, n]`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores must have shape [C] or [R, C]. "
                         f"Received: scores.shape={scores.shape}")
    num = scores.shape[-1]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= num:
        raise ValueError(f"n must be an integer in [1, C={num}]. Received: n={n!r}")
    if np.isnan(scores).any():
        raise ValueError("scores must not contain NaN.")
    rows = scores.reshape(-1, num)
    if n == num:
        order = np.argsort(-rows, axis=-1, kind="stable")
    else:
        kth = -np.partition(-rows, n - 1, axis=-1)[:, n - 1:n]     # the n-th largest
        above = rows > kth
        at = rows == kth
        room = n - above.sum(axis=-1, keepdims=True)
        chosen = above | (at & (np.cumsum(at, axis=-1) <= room))    # exactly n per row
        winners = np.nonzero(chosen)[1].reshape(-1, n)              # ascending index
        values = np.take_along_axis(rows, winners, axis=-1)
        order = np.take_along_axis(winners, np.argsort(-values, axis=-1, kind="stable"), -1)
    return order.astype(np.int64).reshape(scores.shape[:-1] + (n,))


class Policy(abc.ABC):
    """Ranks the candidates of one context; `select` returns one list per request."""

    name: ClassVar[str]

    def scores(self, predictions: CandidatePredictions,
               rng: np.random.Generator) -> np.ndarray:
        """One draw of the ranking score of every candidate, `[C]` (already x CPC)."""
        return self._draw(predictions, 1, rng)[0]

    def select(self, predictions: CandidatePredictions, requests: int,
               rng: np.random.Generator, slots: int = 1) -> np.ndarray:
        """`[requests, slots]` candidate indices (distinct within a row), best first."""
        _check_select(predictions, requests, slots)
        return top_n(self._draw(predictions, requests, rng), slots)

    @abc.abstractmethod
    def _draw(self, predictions: CandidatePredictions, requests: int,
              rng: np.random.Generator) -> np.ndarray:
        """`[requests, C]` scores, one independent draw per request."""


class _DeterministicPolicy(Policy):
    """A policy whose score does not depend on the request: one list, repeated."""

    @abc.abstractmethod
    def _score(self, predictions: CandidatePredictions) -> np.ndarray:
        """`[C]` scores."""

    def _draw(self, predictions, requests, rng):
        return np.broadcast_to(self._score(predictions),
                               (requests, predictions.num_candidates))

    def select(self, predictions, requests, rng, slots=1):
        _check_select(predictions, requests, slots)
        best = top_n(self._score(predictions), slots)
        return np.tile(best, (requests, 1))


@dataclasses.dataclass(frozen=True)
class Greedy(_DeterministicPolicy):
    """Expected revenue `ctr_mean x cpc`; every request gets the same list."""

    name: ClassVar[str] = "greedy"

    def _score(self, predictions):
        return predictions.ctr_mean * predictions.cpc


@dataclasses.dataclass(frozen=True)
class UCB(_DeterministicPolicy):
    """Upper confidence bound `(ctr_mean + c * stddev) x cpc` (Zeldes et al., Sec. 4).

    Args:
        c: exploration weight, >= 0 (0 is `Greedy`).
        stddev: which uncertainty to explore with: "total", "data" or "model".
    """

    c: float = 1.0
    stddev: str = "total"
    name: ClassVar[str] = "ucb"

    def __post_init__(self):
        _check_c(self.c)
        _check_stddev(self.stddev)

    def _score(self, predictions):
        spread = {"total": predictions.total_stddev, "data": predictions.data_stddev,
                  "model": predictions.model_stddev}[self.stddev]
        return (predictions.ctr_mean + self.c * spread) * predictions.cpc


@dataclasses.dataclass(frozen=True)
class Thompson(Policy):
    """Thompson sampling from the predictive CTR distribution (Chapelle & Li 2011).

    For every request and candidate independently: a pass `t ~ U{0..T-1}`, a component
    `k ~ softmax(logits[t])`, then `y ~ N(m_k, s_k^2)` clipped to [0, 1] (Gaussian
    kinds) or `y ~ Beta(alpha_k, beta_k)` (BBDDN); score `y x cpc`.
    Without mixture parameters (REG): `y ~ N(ctr_mean, total_stddev^2)` clipped.
    """

    name: ClassVar[str] = "thompson"

    def _draw(self, predictions, requests, rng):
        return _sample_ctr(predictions, requests, rng) * predictions.cpc


@dataclasses.dataclass(frozen=True)
class EpsilonGreedy(Policy):
    """A uniformly random list with probability `epsilon` per request, else greedy."""

    epsilon: float = 0.1
    name: ClassVar[str] = "epsilon_greedy"

    def __post_init__(self):
        _check_epsilon(self.epsilon)

    def _draw(self, predictions, requests, rng):
        explore = rng.random(requests) < self.epsilon
        greedy = Greedy()._score(predictions)
        scores = np.tile(greedy, (requests, 1))
        scores[explore] = rng.random((int(explore.sum()), predictions.num_candidates))
        return scores


@dataclasses.dataclass(frozen=True)
class Random(Policy):
    """Uniformly random lists of distinct candidates (scores ~ U[0, 1) iid)."""

    name: ClassVar[str] = "random"

    def _draw(self, predictions, requests, rng):
        return rng.random((requests, predictions.num_candidates))


@dataclasses.dataclass(frozen=True)
class PosteriorThompson(Policy):
    """Thompson sampling on the posterior of each candidate's CTR (issue #11).

    The model's predictive distribution is the prior, the candidate's own clicks and
    impressions since the model's data ends are Binomial evidence, the posterior is exact
    (`CandidatePredictions.posterior`); every request draws one CTR per candidate from it
    (Chapelle & Li 2011), score `y x cpc`. With no counts it is Thompson on the prior.
    """

    name: ClassVar[str] = "posterior_ts"

    def _draw(self, predictions, requests, rng):
        return predictions.posterior().sample(rng, requests) * predictions.cpc


@dataclasses.dataclass(frozen=True)
class PosteriorUCB(_DeterministicPolicy):
    """Bayes-UCB: an upper quantile of each candidate's posterior CTR, times the CPC.

    Kaufmann, Cappe and Garivier (2012) use the quantile `1 - 1/t` at step t (their c = 0
    variant, the one they recommend in practice); here t is 1 + the impressions the
    context's candidates have collected, so the bonus shrinks as the context is explored.
    The quantile is that of the posterior's moment-matched Beta (`Mixture.collapse`,
    closed form): exact for a one-Beta prior (REG, flat, global), a fast stand-in for a
    mixture's bisection (0.45 s per 200 candidates x 48 components, too slow per request).

    Args:
        quantile: a fixed quantile level in (0, 1) instead of `1 - 1/t`.
    """

    quantile: float | None = None
    name: ClassVar[str] = "posterior_ucb"

    def __post_init__(self):
        _check_quantile(self.quantile)

    def level(self, predictions: CandidatePredictions) -> float:
        """The quantile level used for `predictions`."""
        if self.quantile is not None:
            return self.quantile
        seen = 0.0 if predictions.impressions is None else float(np.sum(predictions.impressions))
        return 1.0 - 1.0 / (2.0 + seen)

    def _score(self, predictions):
        posterior = predictions.posterior().collapse()
        return posterior.quantile(self.level(predictions)) * predictions.cpc


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """Which policy to run and its parameters (unused ones are ignored but validated).

    Args:
        name: one of `POLICY_NAMES`.
        c: UCB exploration weight, >= 0.
        stddev: UCB uncertainty, one of `STDDEV_KINDS`.
        epsilon: EpsilonGreedy exploration rate in [0, 1].
        quantile: PosteriorUCB quantile level in (0, 1); None: Bayes-UCB's `1 - 1/t`.
    """

    name: str = dataclasses.field(default="greedy", metadata={
        "help": "how to pick targets from the predicted distributions", "flag": "policy",
        "choices": POLICY_NAMES})
    c: float = dataclasses.field(default=1.0, metadata={
        "help": "UCB exploration weight: score = (mean + c * stddev) x CPC"})
    stddev: str = dataclasses.field(default="total", metadata={
        "help": "UCB stddev", "choices": STDDEV_KINDS})
    epsilon: float = dataclasses.field(default=0.1, metadata={
        "help": "epsilon-greedy exploration rate"})
    quantile: float | None = dataclasses.field(default=None, metadata={
        "help": "posterior_ucb quantile level in (0, 1) (default: Bayes-UCB's 1 - 1/t)"})

    def __post_init__(self):
        if self.name not in POLICY_NAMES:
            raise ValueError(f"PolicyConfig.name must be one of {POLICY_NAMES}. "
                             f"Received: name={self.name!r}")
        _check_c(self.c)
        _check_stddev(self.stddev)
        _check_epsilon(self.epsilon)
        _check_quantile(self.quantile)


def make_policy(config: PolicyConfig) -> Policy:
    """The `Policy` that `config` describes."""
    if config.name == "ucb":
        return UCB(c=config.c, stddev=config.stddev)
    if config.name == "epsilon_greedy":
        return EpsilonGreedy(epsilon=config.epsilon)
    if config.name == "posterior_ucb":
        return PosteriorUCB(quantile=config.quantile)
    if config.name == "posterior_ts":
        return PosteriorThompson()
    return {"greedy": Greedy, "thompson": Thompson, "random": Random}[config.name]()


def _sample_ctr(predictions: CandidatePredictions, requests: int,
                rng: np.random.Generator) -> np.ndarray:
    """`[requests, C]` CTRs drawn from the predictive distribution, clipped to [0, 1]."""
    num = predictions.num_candidates
    noise = rng.standard_normal((requests, num))
    if predictions.mixture is None:
        y = predictions.ctr_mean + predictions.total_stddev * noise
        return np.clip(y, 0.0, 1.0)
    k = predictions.num_components
    mixture = Mixture.from_params(predictions.mixture, k, predictions.family)  # [T, C, K]
    cdf = np.cumsum(mixture.weights, axis=-1)
    cdf = (cdf / cdf[..., -1:]).reshape(-1, k)                      # [T*C, K]
    # One flat (pass, candidate) index per draw; a loop over the K - 1 CDF columns
    # is much faster than materialising [requests, C, K].
    # One MC-dropout pass per request, shared by all candidates: a coherent sample of
    # the network (Thompson sampling over the dropout posterior), then one draw from
    # each candidate's mixture under that network.
    cell = (rng.integers(0, predictions.mixture.shape[0], size=(requests, 1)) * num
            + np.arange(num))
    u = rng.random((requests, num))
    component = np.zeros((requests, num), dtype=np.int64)
    for j in range(k - 1):
        component += u >= cdf[cell, j]
    return mixture.draw(cell * k + component, rng, noise=noise)


def _check_select(predictions: CandidatePredictions, requests: int, slots: int) -> None:
    if not isinstance(predictions, CandidatePredictions):
        raise TypeError(f"predictions must be CandidatePredictions. "
                        f"Received: {type(predictions).__name__}")
    if isinstance(requests, bool) or not isinstance(requests, (int, np.integer)) \
            or requests < 0:
        raise ValueError(f"requests must be an integer >= 0. Received: requests={requests!r}")
    if isinstance(slots, bool) or not isinstance(slots, (int, np.integer)) \
            or not 1 <= slots <= predictions.num_candidates:
        raise ValueError(f"slots must be an integer in [1, C={predictions.num_candidates}]. "
                         f"Received: slots={slots!r}")


def _check_c(c: float) -> None:
    if not isinstance(c, (int, float, np.number)) or not math.isfinite(c) or c < 0:
        raise ValueError(f"c must be a finite number >= 0. Received: c={c!r}")


def _check_stddev(stddev: str) -> None:
    if stddev not in STDDEV_KINDS:
        raise ValueError(f"stddev must be one of {STDDEV_KINDS}. Received: stddev={stddev!r}")


def _check_epsilon(epsilon: float) -> None:
    if not isinstance(epsilon, (int, float, np.number)) or not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1]. Received: epsilon={epsilon!r}")


def _check_quantile(quantile) -> None:
    if quantile is not None and (isinstance(quantile, bool) or not 0.0 < quantile < 1.0):
        raise ValueError(f"quantile must be in (0, 1) or None. Received: quantile={quantile!r}")

"""The same mixtures in numpy/scipy, for evaluation, policies, candidation and reports.

`Mixture` holds `weights`, `means` and `scales` of shape `[..., K]` and a `family`:

- `"gaussian"` (MDN / DDN): `scales` are the component stddevs; the data distribution
  is `sum_k a_k N(m_k, s_k^2)`. With `impressions` its CDF is the DDN's observed-CTR
  distribution, each component widened by `s_e^2 = mu (1 - mu) / n` (Zeldes et al. 2018,
  Sec. 3, Eq. 3).
- `"beta"` (BBDDN): `scales` are the concentrations `kappa_k = alpha_k + beta_k`; the
  observed clicks follow `sum_k a_k BetaBinomial(n, alpha_k, beta_k)` exactly.

The floors and clips are the TF module's (`MIN_STDDEV`, `MEAN_EPSILON`, `MIN_PARAMETER`),
so a number computed here equals the training loss's.

**Counts for every kind.** `count_log_prob` / `count_cdf` / `count_quantile` score the
clicks of a row under the exact Binomial measurement model, so kinds compare on one
scale. A Beta mixture is used as it is; a Gaussian component, whose support is not
[0, 1], is first moment-matched to a Beta (`to_beta`: mean clipped into (0, 1), variance
capped below `m (1 - m)`); a point prediction (REG) is `Binomial(n, mean)`
(`point_count_log_prob`). Rows with `n <= EXACT_MAX_IMPRESSIONS` get the exact count CDF
(cumulated pmf); above it the count/n of each component is a Beta with the
Beta-Binomial's mean and variance, continuity-corrected (error far below a count's own
noise at such n).

Example:
    >>> mix = Mixture.from_params(params, num_components=3, family="beta")   # [N, 3K]
    >>> mix.mean(), mix.stddev()                                              # [N] each
    >>> nll = -mix.count_log_prob(clicks, impressions).mean()
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import special

from tfddn.distributions._constants import (MAX_CONCENTRATION, MEAN_EPSILON, MIN_PARAMETER,
                                            MIN_STDDEV)

__all__ = ["EXACT_MAX_IMPRESSIONS", "FAMILIES", "Mixture", "point_count_log_prob"]

FAMILIES = ("gaussian", "beta")
EXACT_MAX_IMPRESSIONS = 256
_BATCH_CELLS = 1 << 20     # rows x counts of one exact count-CDF table


def _clip_mean(m):
    return np.clip(m, MEAN_EPSILON, 1.0 - MEAN_EPSILON)


def _log_betabinom(c, n, alpha, beta):
    """`log BetaBinomial(c; n, alpha, beta)`, broadcasting, float64."""
    g = special.gammaln
    return (g(n + 1.0) - g(c + 1.0) - g(n - c + 1.0) + special.betaln(c + alpha, n - c + beta)
            - special.betaln(alpha, beta))


@dataclasses.dataclass(frozen=True, eq=False)
class Mixture:
    """A Gaussian or Beta mixture per row (module docstring); arrays `[..., K]`, float64."""

    weights: np.ndarray
    means: np.ndarray
    scales: np.ndarray
    family: str = "gaussian"

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}. Received: family={self.family!r}")
        arrays = [np.asarray(getattr(self, n), dtype=np.float64)
                  for n in ("weights", "means", "scales")]
        if not arrays[0].shape or any(a.shape != arrays[0].shape for a in arrays):
            raise ValueError("weights, means and scales must have one shape [..., K]. Received: "
                             f"{[a.shape for a in arrays]}")
        for name, value in zip(("weights", "means", "scales"), arrays):
            object.__setattr__(self, name, value)

    @classmethod
    def from_params(cls, params, num_components: int, family: str = "gaussian") -> "Mixture":
        """From packed `[..., 3K]` head outputs `concat(logits, means, scales)`."""
        params = np.asarray(params, dtype=np.float64)
        k = int(num_components)
        if params.shape[-1] != 3 * k:
            raise ValueError(f"Expected packed params with last dimension 3K = {3 * k}. "
                             f"Received: params.shape={params.shape}")
        logits = params[..., :k]
        weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return cls(weights / weights.sum(axis=-1, keepdims=True), params[..., k:2 * k],
                   params[..., 2 * k:], family)

    @property
    def num_components(self) -> int:
        return self.weights.shape[-1]

    def params(self) -> np.ndarray:
        """Packed `[..., 3K]` `concat(log weights, means, scales)` (a head's output shape)."""
        log_w = np.log(np.maximum(self.weights, 1e-300))
        return np.concatenate([log_w, self.means, self.scales], axis=-1)

    def take(self, index) -> "Mixture":
        """Rows `index` of the leading axis."""
        return Mixture(self.weights[index], self.means[index], self.scales[index], self.family)

    # Moments ---------------------------------------------------------------------------

    def component_stddevs(self) -> np.ndarray:
        if self.family == "beta":
            m = _clip_mean(self.means)
            return np.sqrt(m * (1.0 - m) / (self.scales + 1.0))
        return np.maximum(self.scales, MIN_STDDEV)

    def mean(self) -> np.ndarray:
        return np.sum(self.weights * self.means, axis=-1)

    def stddev(self) -> np.ndarray:
        """The data uncertainty `s_d`: std of the mixture (sum of non-negative terms)."""
        mean = self.mean()[..., None]
        variance = np.sum(self.weights * (self.component_stddevs() ** 2
                                          + (self.means - mean) ** 2), axis=-1)
        return np.sqrt(np.maximum(variance, 0.0))

    def measurement_stddev(self, impressions) -> np.ndarray:
        """`s_e = sqrt(mu (1 - mu) / n)`, `mu` the mixture mean (Zeldes et al., Sec. 3)."""
        mu = _clip_mean(self.mean())
        return np.sqrt(mu * (1.0 - mu) / np.maximum(np.asarray(impressions, np.float64), 1.0))

    def mass_below_zero(self) -> np.ndarray:
        """Predictive mass of the true CTR below 0 per row (0 for a Beta mixture)."""
        if self.family == "beta":
            return np.zeros(self.weights.shape[:-1])
        return np.sum(self.weights * special.ndtr(-self.means / self.component_stddevs()), -1)

    def alpha_beta(self) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters of every component (a Gaussian one moment-matched, `to_beta`)."""
        mix = self if self.family == "beta" else self.to_beta()
        m = _clip_mean(mix.means)
        return (np.maximum(m * mix.scales, MIN_PARAMETER),
                np.maximum((1.0 - m) * mix.scales, MIN_PARAMETER))

    def to_beta(self) -> "Mixture":
        """Each component as the Beta with its mean (clipped into (0, 1)) and variance
        (capped below `m (1 - m)`): how a Gaussian kind enters the exact count model and
        Beta-conjugate updates."""
        if self.family == "beta":
            return self
        m = _clip_mean(self.means)
        bound = m * (1.0 - m)
        variance = np.clip(self.component_stddevs() ** 2, bound / (MAX_CONCENTRATION + 1.0),
                           bound * (1.0 - 1e-9))
        kappa = np.clip(bound / variance - 1.0, MIN_PARAMETER, MAX_CONCENTRATION)
        return Mixture(self.weights, m, kappa, "beta")

    # The CTR scale -----------------------------------------------------------------------

    def cdf(self, y, impressions=None) -> np.ndarray:
        """CDF of the true CTR at `y` (`[..., N]` against N rows of `[N, K]`).

        Gaussian with `impressions`: the DDN's observed-CTR CDF (components widened by
        `s_e^2`). Beta: the Beta mixture's CDF (`impressions` must be None; counts have
        `count_cdf`).
        """
        y = np.asarray(y, dtype=np.float64)[..., None]
        if self.family == "beta":
            if impressions is not None:
                raise ValueError("a Beta mixture's observed clicks are discrete: use count_cdf")
            a, b = self.alpha_beta()
            return np.sum(self.weights * special.betainc(a, b, np.clip(y, 0.0, 1.0)), axis=-1)
        scales = self._gaussian_scales(impressions)
        return np.clip(np.sum(self.weights * special.ndtr((y - self.means) / scales), -1), 0, 1)

    def quantile(self, q, impressions=None, iterations: int = 60) -> np.ndarray:
        """Quantiles of `cdf` by vectorised bisection; `q` broadcast against `[N]`."""
        q = np.asarray(q, dtype=np.float64)
        shape = np.broadcast_shapes(q.shape, self.weights.shape[:-1])
        if self.family == "beta" and self.num_components == 1:  # one Beta: closed form
            a, b = (v[..., 0] for v in self.alpha_beta())
            return np.broadcast_to(special.betaincinv(a, b, q), shape).copy()
        if self.family == "beta":
            lo, hi = np.zeros(shape), np.ones(shape)
        else:
            scales = self._gaussian_scales(impressions)
            lo = np.broadcast_to(np.min(self.means - 12 * scales, axis=-1), shape).copy()
            hi = np.broadcast_to(np.max(self.means + 12 * scales, axis=-1), shape).copy()
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid, impressions) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def _gaussian_scales(self, impressions) -> np.ndarray:
        variance = self.component_stddevs() ** 2
        if impressions is not None:
            variance = variance + self.measurement_stddev(impressions)[..., None] ** 2
        return np.sqrt(np.maximum(variance, MIN_STDDEV**2))

    # Counts under the exact Binomial measurement model ------------------------------------

    def count_log_prob(self, clicks, impressions) -> np.ndarray:
        """`log P(clicks | n)` per row, `[N]` (module docstring)."""
        a, b = self.alpha_beta()
        c, n = (np.asarray(v, dtype=np.float64)[..., None] for v in (clicks, impressions))
        with np.errstate(divide="ignore"):
            log_w = np.log(self.weights)
        return special.logsumexp(log_w + _log_betabinom(c, n, a, b), axis=-1)

    def count_cdf(self, clicks, impressions) -> np.ndarray:
        """`P(C <= clicks | n)` per row, `[N]`; 0 below 0 and 1 from `n` on."""
        c = np.asarray(clicks, dtype=np.float64)
        n = np.asarray(impressions, dtype=np.float64)
        out = np.empty(c.shape)
        small = n <= EXACT_MAX_IMPRESSIONS
        for rows in _similar_n_batches(np.flatnonzero(small), n):
            cum = self.take(rows)._exact_count_cdf(n[rows])             # [S, G]
            idx = np.clip(c[rows], -1, n[rows]).astype(np.int64)
            out[rows] = np.where(idx < 0, 0.0, np.take_along_axis(
                cum, np.maximum(idx, 0)[:, None], axis=1)[:, 0])
        if (~small).any():
            a, b = self.take(~small)._observed_beta(n[~small])
            x = np.clip((c[~small] + 0.5) / n[~small], 0.0, 1.0)[:, None]
            value = np.sum(self.weights[~small] * special.betainc(a, b, x), axis=-1)
            out[~small] = np.where(c[~small] < 0, 0.0, np.where(c[~small] >= n[~small], 1.0,
                                                                 value))
        return np.clip(out, 0.0, 1.0)

    def count_quantile(self, q, impressions) -> np.ndarray:
        """Smallest count `c` with `count_cdf(c) >= q`, per row (`q` scalar or `[N]`)."""
        n = np.asarray(impressions, dtype=np.float64)
        q = np.broadcast_to(np.asarray(q, dtype=np.float64), n.shape)
        lo, hi = np.full(n.shape, -1.0), n.copy()        # cdf(lo) < q <= cdf(hi)
        for _ in range(int(np.ceil(np.log2(max(n.max(), 1.0) + 2))) + 1):
            mid = np.floor(0.5 * (lo + hi))
            ok = self.count_cdf(mid, n) >= q
            lo, hi = np.where(ok, lo, mid), np.where(ok, mid, hi)
            if np.all(hi - lo <= 1):
                break
        return hi

    def _exact_count_cdf(self, n) -> np.ndarray:
        """`[S, max n + 1]` cumulated Beta-Binomial pmf of rows with small n."""
        a, b = self.alpha_beta()                                        # [S, K]
        grid = np.arange(int(n.max()) + 1, dtype=np.float64)            # [G]
        nn = n[:, None, None]
        c = grid[None, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            log_pmf = _log_betabinom(np.minimum(c, nn), nn, a[:, None], b[:, None])
            pmf = np.where(c <= nn, np.exp(log_pmf), 0.0)               # [S, G, K]
        return np.cumsum(np.einsum("sgk,sk->sg", pmf, self.weights), axis=1)

    def _observed_beta(self, n) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters matching each component's `BetaBinomial(n) / n` moments."""
        a, b = self.alpha_beta()
        kappa = a + b
        nn = n[:, None]
        kappa_obs = nn * (kappa + 1.0) / (kappa + nn) - 1.0
        m = a / kappa
        return (np.maximum(m * kappa_obs, MIN_PARAMETER),
                np.maximum((1.0 - m) * kappa_obs, MIN_PARAMETER))

    # Conjugate updates -----------------------------------------------------------------------

    def posterior(self, clicks, impressions) -> "Mixture":
        """The mixture after observing `clicks` of `impressions` more trials per row.

        Each Beta component updates to `Beta(alpha_k + c, beta_k + n - c)` and its weight
        is multiplied by its evidence `BetaBinomial(c; n, alpha_k, beta_k)` (renormalised):
        exact Bayes for a Beta mixture prior and Binomial counts. A Gaussian mixture is first
        moment-matched to Betas (`to_beta`). `n = 0` returns the prior; clicks are clipped
        into [0, n].

        Args:
            clicks, impressions: counts broadcastable to the leading shape `[...]`.

        Returns:
            A `"beta"` `Mixture` of the same shape.
        """
        a, b = self.alpha_beta()
        shape = self.weights.shape
        n = np.broadcast_to(np.maximum(np.asarray(impressions, dtype=np.float64), 0.0)[..., None],
                            shape[:-1] + (1,))
        c = np.clip(np.asarray(clicks, dtype=np.float64)[..., None], 0.0, n)
        weights = np.broadcast_to(self.weights, shape).copy()
        seen = n[..., 0] > 0  # rows without evidence keep their weights (and save the lgammas)
        if np.any(seen) and shape[-1] > 1:
            g = special.gammaln
            ak, bk, cs, ns = a[seen], b[seen], c[seen], n[seen]
            # The evidence up to its binomial coefficient, which is the same for every k.
            log_w = (g(ak + cs) - g(ak) + g(bk + ns - cs) - g(bk) + g(ak + bk) - g(ak + bk + ns))
            with np.errstate(divide="ignore"):
                log_w = np.log(weights[seen]) + log_w
            w = np.exp(log_w - log_w.max(axis=-1, keepdims=True))
            weights[seen] = w / w.sum(axis=-1, keepdims=True)
        a_post, b_post = a + c, b + n - c
        return Mixture(weights, a_post / (a_post + b_post), a_post + b_post, "beta")

    def with_strength(self, strength: float) -> "Mixture":
        """The Beta mixture (Gaussians moment-matched, `to_beta`) with every component's
        concentration `alpha + beta` multiplied by `strength`: means and weights kept, each
        component `strength` times as many pseudo-impressions (wider below 1). Empirical
        Bayes tunes it (`tfddn.posterior.fit_evidence`) when the model's stddev should not
        be taken at face value."""
        if not strength > 0:
            raise ValueError(f"strength must be > 0. Received: strength={strength!r}")
        beta = self.to_beta()
        return Mixture(beta.weights, beta.means,
                       np.maximum(beta.scales * strength, 2.0 * MIN_PARAMETER), "beta")

    def collapse(self) -> "Mixture":
        """`[..., 1]` the single Beta with this mixture's mean and stddev (moment-matched):
        a cheap stand-in where a mixture's quantile would need bisection."""
        mean = _clip_mean(self.mean())[..., None]
        return Mixture(np.ones_like(mean), mean, self.stddev()[..., None]).to_beta()

    def flatten_passes(self) -> "Mixture":
        """`[T, C, K]` (T MC-dropout passes) -> `[C, T*K]`: the equal-weight mixture over
        passes, the MC-dropout predictive distribution of the true CTR as one mixture."""
        t, c, k = self.weights.shape
        return Mixture(*(np.moveaxis(v, 0, 1).reshape(c, t * k)
                         for v in (self.weights / t, self.means, self.scales)), self.family)

    # Sampling -------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """`[size, ...]` independent CTR draws of every row (a component, then its Beta or
        clipped Gaussian)."""
        cdf = np.cumsum(self.weights, axis=-1)
        u = rng.random((size,) + self.weights.shape[:-1] + (1,))
        component = np.minimum((u >= cdf / cdf[..., -1:]).sum(axis=-1), self.num_components - 1)
        rows = np.arange(int(np.prod(self.weights.shape[:-1]))).reshape(self.weights.shape[:-1])
        return self.draw(rows * self.num_components + component, rng)

    def draw(self, flat_index, rng: np.random.Generator, noise=None) -> np.ndarray:
        """One CTR draw from each component named by `flat_index` (into the flattened
        `[..., K]` arrays), clipped to [0, 1]: `N(m, s^2)` or `Beta(alpha, beta)`.

        `noise`: optional standard normals shaped like `flat_index` for the Gaussian
        draws (drawn from `rng` when None; unused by a Beta mixture).
        """
        if self.family == "beta":
            a, b = (v.reshape(-1)[flat_index] for v in self.alpha_beta())
            return rng.beta(a, b)
        if noise is None:
            noise = rng.standard_normal(np.shape(flat_index))
        means = self.means.reshape(-1)[flat_index]
        stddevs = self.component_stddevs().reshape(-1)[flat_index]
        return np.clip(means + stddevs * noise, 0.0, 1.0)


def _similar_n_batches(rows, n, cells: int = _BATCH_CELLS):
    """`rows` in batches of similar `n` (by power of two), each at most ~`cells` rows x
    counts: the exact count CDF tabulates counts `0..max n` of a batch's rows."""
    level = np.ceil(np.log2(n[rows] + 1.0)).astype(np.int64)
    for value in np.unique(level):
        members = rows[level == value]
        size = max(cells >> int(value), 1)
        for start in range(0, len(members), size):
            yield members[start:start + size]


def point_count_log_prob(clicks, impressions, mean) -> np.ndarray:
    """`log Binomial(clicks; n, mean)`: the count model of a point prediction (REG)."""
    p = _clip_mean(np.asarray(mean, dtype=np.float64))
    c, n = (np.asarray(v, dtype=np.float64) for v in (clicks, impressions))
    g = special.gammaln
    return g(n + 1) - g(c + 1) - g(n - c + 1) + c * np.log(p) + (n - c) * np.log1p(-p)

"""`CandidatePredictions`: a model's predictions for the C candidate targets of a context.

What every policy (`tfddn.policy`), candidation (`tfddn.candidation`), off-policy
evaluation (`tfddn.ope`) and the simulator hand around: the predicted CTR mean, its data
and model stddevs, the CPC and optionally the packed mixture parameters of T MC-dropout
passes (for Thompson sampling and the posterior policies).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from tfddn.distributions import FAMILIES, Mixture

__all__ = ["CandidatePredictions"]


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

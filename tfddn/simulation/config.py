"""`SimulationConfig`: one simulation's model kind, policy and seed (`tfddn simulate`).

The world's size is a `tfddn.simulation.world.WorldConfig`; `tfddn.simulation.simulator`
runs it. TensorFlow-free, so `tfddn simulate --help` is instant.
"""

from __future__ import annotations

import dataclasses

from tfddn.configs import MC_SAMPLES, check_mc_samples
from tfddn.models.config import MODEL_KINDS
from tfddn.simulation.evidence import PRIORS

__all__ = ["MODEL_KINDS", "POLICIES", "POSTERIOR_POLICIES", "SimulationConfig", "VW_POLICIES"]

VW_POLICIES = ("vw-squarecb", "vw-epsilon")
POSTERIOR_POLICIES = ("posterior_ts", "posterior_ucb")
POLICIES = ("greedy", "ucb", "thompson", "epsilon_greedy", "random", *POSTERIOR_POLICIES,
            *VW_POLICIES)

@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """One simulation: a model kind, a policy and a seed (`WorldConfig` sizes the world)."""

    out_dir: str = dataclasses.field(metadata={"help": "where logs, runs and results go"})
    days: int = dataclasses.field(default=14, metadata={
        "help": "simulated days after the random bootstrap day 0"})
    seed: int = dataclasses.field(default=0, metadata={"help": "world, traffic and click seed"})
    model: str = dataclasses.field(default="ddn", metadata={
        "help": "model kind (ignored by the VW policies)", "choices": MODEL_KINDS,
        "flag": "kind", "aliases": ("model",)})
    policy: str = dataclasses.field(default="ucb", metadata={
        "help": "how to pick a target per request", "choices": POLICIES})
    c: float = dataclasses.field(default=1.0, metadata={
        "help": "UCB exploration weight: score = (mean + c * stddev) x CPC"})
    stddev: str = dataclasses.field(default="total", metadata={
        "help": "UCB stddev", "choices": ("total", "data", "model")})
    epsilon: float = dataclasses.field(default=0.1, metadata={
        "help": "epsilon-greedy / VW epsilon exploration rate"})
    quantile: float | None = dataclasses.field(default=None, metadata={
        "help": "posterior_ucb quantile level in (0, 1); default: Bayes-UCB's 1 - 1/t"})
    prior: str = dataclasses.field(default="model", metadata={
        "help": "prior of the posterior policies: the model's distribution, or no model: "
                "flat Beta(1, 1) / global pooled-CTR Beta per pair", "choices": PRIORS})
    prior_strength: float | None = dataclasses.field(default=None, metadata={
        "help": "posterior policies: the prior's concentrations x this; default: fitted "
                "each day by empirical Bayes"})
    history_decay: float | None = dataclasses.field(default=None, metadata={
        "help": "posterior policies: weight decay^age of a pair's counts of earlier days; "
                "default: fitted each day by empirical Bayes"})
    mc_samples: int = dataclasses.field(default=MC_SAMPLES, metadata={
        "help": "MC-dropout passes when scoring (model stddev, Thompson)"})
    first_epochs: int = dataclasses.field(default=8, metadata={
        "help": "epochs of the first model (day 0 logs)"})
    daily_epochs: int = dataclasses.field(default=2, metadata={
        "help": "epochs of each warm-started daily retraining"})
    window_days: int = dataclasses.field(default=7, metadata={
        "help": "days of logs each retraining reads"})
    min_count: int = dataclasses.field(default=30, metadata={
        "help": "impressions a target / advertiser / publisher / word needs in the window "
                "to get its own embedding (rarer ones share OOV)"})
    dropout: float = dataclasses.field(default=0.1, metadata={"help": "model dropout"})
    slots: int = dataclasses.field(default=3, metadata={
        "help": "targets recommended per request (a widget's list)"})
    throughput_threshold: int = dataclasses.field(default=10, metadata={
        "help": "a pair counts for throughput if recommended more than this on day d-1"})
    keep_days: bool = dataclasses.field(default=False, metadata={
        "help": "keep every day's TFRecords and model runs (default: only the last)"})

    def __post_init__(self):
        check_mc_samples(self.mc_samples)
        for name in ("days", "first_epochs", "daily_epochs", "window_days", "slots"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {MODEL_KINDS}. Received: {self.model!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}. Received: {self.policy!r}")
        if self.c < 0 or not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"c must be >= 0 and epsilon in [0, 1]. Received: c={self.c}, "
                             f"epsilon={self.epsilon}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}. Received: {self.prior!r}")
        if self.prior != "model" and self.policy not in POSTERIOR_POLICIES:
            raise ValueError(f"prior={self.prior!r} needs a posterior policy "
                             f"{POSTERIOR_POLICIES}. Received: policy={self.policy!r}")
        if self.quantile is not None and not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1). Received: quantile={self.quantile}")
        if self.prior_strength is not None and not self.prior_strength > 0:
            raise ValueError(f"prior_strength must be > 0. "
                             f"Received: prior_strength={self.prior_strength}")
        if self.history_decay is not None and not 0.0 <= self.history_decay <= 1.0:
            raise ValueError(f"history_decay must be in [0, 1]. "
                             f"Received: history_decay={self.history_decay}")

    @property
    def uses_model(self) -> bool:
        return (self.policy not in VW_POLICIES and self.policy != "random"
                and self.prior == "model")

    @property
    def label(self) -> str:
        if self.policy in VW_POLICIES or self.policy == "random":
            return self.policy
        detail = {"ucb": f"(c={self.c:g}, {self.stddev})",
                  "epsilon_greedy": f"(eps={self.epsilon:g})",
                  "posterior_ucb": f"(q={self.quantile:g})" if self.quantile else ""
                  }.get(self.policy, "")
        if self.policy in POSTERIOR_POLICIES:
            fixed = [f"{name}={value:g}" for name, value in
                     (("strength", self.prior_strength), ("decay", self.history_decay))
                     if value is not None]
            detail += f"[{', '.join(fixed)}]" if fixed else ""
        owner = self.model.upper() if self.prior == "model" else f"{self.prior}-prior"
        return f"{owner} {self.policy}{detail}"

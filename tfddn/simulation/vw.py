"""Vowpal Wabbit's contextual bandit as the industry-peer baseline of the simulation.

The idea: every request is a contextual-bandit round. The context (publisher, device, ...)
goes into a shared namespace `c`, each candidate ad into an action namespace `a`, and VW's
`cb_explore_adf` learns a cost regressor over the quadratic `c x a` features (`--cb_type mtr`,
its default) and turns the regressed costs into a probability mass function (pmf) over the
actions with one of two exploration rules:

- `squarecb`: inverse-gap weighting. With regressed costs `f(a)` and greedy action `b`,
  `p(a) = 1 / (A + gamma * (f(a) - f(b)))` for `a != b` and the rest of the mass on `b`,
  where `gamma = gamma_scale * n ** gamma_exponent` grows with the number `n` of learned
  examples (Foster & Rakhlin 2020, Algorithm 1; VW's `--squarecb`).
- `epsilon`: epsilon-greedy, `p(b) = 1 - epsilon + epsilon / A`, `p(a) = epsilon / A`.

The simulator, not VW, samples the served action from the pmf (with its own generator, so a
run is reproducible), draws the click and the learner is updated with the IPS triple
(action, cost, probability) of that one action.

Costs are scaled into [-1, 0]: `cost="click"` uses `-click`, `cost="revenue"` uses
`-click * cpc / max(cpc)` over the candidates of the call. Scaling matters for SquareCB
because `gamma` multiplies cost *differences*: unscaled revenue (in currency units) would
silently change the exploration rate by the CPC scale, and `gamma_scale=10` (VW's default)
is tuned for costs in a unit interval. The squared loss regression is also better
conditioned with bounded targets.

Speed: the candidate lines are parsed once per `serve` call and the parsed examples are
reused for every prediction; only the chosen action's labelled line is parsed for learning.
This gives the same updates as re-parsing the whole multi-line example per request (checked
by the tests) at about 1/6 of the cost.

References:
    Foster, D. J. & Rakhlin, A. (2020). Beyond UCB: Optimal and efficient contextual bandits
    with regression oracles. ICML.
    Bietti, A., Agarwal, A. & Langford, J. (2021). A contextual bandit bake-off. JMLR 22.

Example:
    >>> bandit = VowpalWabbitBandit(VWConfig(algorithm="squarecb", seed=0))
    >>> chosen, clicks = bandit.serve(
    ...     {"device": "mobile"}, [{"ad": "x", "title": ["w1", "w2"]}, {"ad": "y"}],
    ...     np.array([1.0, 2.0]), 10, lambda i: int(i == 1), np.random.default_rng(0))
    >>> bandit.finish()
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import vowpalwabbit

ALGORITHMS = ("squarecb", "epsilon")
COSTS = ("revenue", "click")
SHARED_NAMESPACE = "c"
ACTION_NAMESPACE = "a"

# VW text format: whitespace separates features, "|" namespaces, ":" name from value.
# Percent-escaping keeps distinct values distinct ("a b" != "a_b").
_ESCAPES = str.maketrans({"%": "%25", " ": "%20", "\t": "%09", "\n": "%0A", "\r": "%0D",
                          "|": "%7C", ":": "%3A"})


@dataclasses.dataclass(frozen=True)
class VWConfig:
    """Exploration rule and learner settings (defaults are VW's own where it has one).

    Args:
        algorithm: "squarecb" (`--squarecb`) or "epsilon" (epsilon-greedy, `--epsilon`).
        epsilon: exploration mass of the epsilon-greedy rule, in [0, 1].
        gamma_scale: SquareCB greediness scale (`--gamma_scale`, VW default 10).
        gamma_exponent: exponent on the example count in SquareCB's gamma (VW default 0.5).
        learning_rate: SGD learning rate (`-l`, VW default 0.5).
        interactions: namespace interactions (`--interactions`), e.g. "ca" = context x action.
        bit_precision: log2 of the hashed weight table size (`-b`; VW default 18).
        seed: VW's `--random_seed`.
        cost: "revenue" (cost = -click * cpc / max cpc) or "click" (cost = -click).
    """

    algorithm: str = "squarecb"
    epsilon: float = 0.05
    gamma_scale: float = 10.0
    gamma_exponent: float = 0.5
    learning_rate: float = 0.5
    interactions: tuple[str, ...] = ("ca",)
    bit_precision: int = 20
    seed: int = 0
    cost: str = "revenue"

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {list(ALGORITHMS)}. "
                             f"Received: algorithm={self.algorithm!r}")
        if self.cost not in COSTS:
            raise ValueError(f"cost must be one of {list(COSTS)}. Received: cost={self.cost!r}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1]. Received: epsilon={self.epsilon!r}")
        for name in ("gamma_scale", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0. Received: {name}={getattr(self, name)!r}")
        if not self.gamma_exponent >= 0:
            raise ValueError(f"gamma_exponent must be >= 0. "
                             f"Received: gamma_exponent={self.gamma_exponent!r}")
        namespaces = set(SHARED_NAMESPACE + ACTION_NAMESPACE)
        if isinstance(self.interactions, str) or any(
                not isinstance(term, str) or len(term) < 2 or not set(term) <= namespaces
                for term in self.interactions):
            raise ValueError(f"interactions must be a tuple of strings of >= 2 namespace letters "
                             f"from {sorted(namespaces)}. Received: "
                             f"interactions={self.interactions!r}")
        if not isinstance(self.bit_precision, int) or not 1 <= self.bit_precision <= 30:
            raise ValueError(f"bit_precision must be an integer in [1, 30]. "
                             f"Received: bit_precision={self.bit_precision!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0. Received: seed={self.seed!r}")

    def vw_arguments(self) -> str:
        """The VW command line this config stands for."""
        args = ["--cb_explore_adf", "--quiet", f"--random_seed {self.seed}",
                f"-b {self.bit_precision}", f"-l {self.learning_rate:.9g}"]
        if self.algorithm == "squarecb":
            args += ["--squarecb", f"--gamma_scale {self.gamma_scale:.9g}",
                     f"--gamma_exponent {self.gamma_exponent:.9g}"]
        else:
            args += [f"--epsilon {self.epsilon:.9g}"]
        args += [f"--interactions {term}" for term in self.interactions]
        return " ".join(args)


def escape(text: str) -> str:
    """Percent-escapes the characters VW's text format reserves (space, `|`, `:`, `%`)."""
    return str(text).translate(_ESCAPES)


def features(values: Mapping[str, "str | Sequence[str] | float"]) -> str:
    """VW tokens of one namespace: `name=value` per categorical, one token per list element,
    `name:value` for numbers."""
    tokens = []
    for name, value in values.items():
        name = escape(name)
        if isinstance(value, (bool, np.bool_)):
            tokens.append(f"{name}={value}")
        elif isinstance(value, (int, float, np.integer, np.floating)):
            tokens.append(f"{name}:{float(value):.9g}")
        elif isinstance(value, str):
            tokens.append(f"{name}={escape(value)}")
        else:
            tokens.extend(f"{name}={escape(item)}" for item in value)
    return " ".join(tokens)


class VowpalWabbitBandit:
    """An online `cb_explore_adf` learner that serves one slot per request.

    Args:
        config: a `VWConfig`.

    Attributes:
        name: "vw-squarecb" or "vw-epsilon".
        propensities: probability of each chosen action in the last `serve` call.
    """

    def __init__(self, config: VWConfig):
        if not isinstance(config, VWConfig):
            raise TypeError(f"config must be a VWConfig. Received: config={config!r}")
        self.config = config
        self.name = f"vw-{config.algorithm}"
        self.propensities = np.zeros(0)
        self._workspace = vowpalwabbit.Workspace(config.vw_arguments())

    def serve(self, shared: Mapping[str, str], actions: Sequence[Mapping[str, "str | list[str]"]],
              cpc: np.ndarray, requests: int, reward: Callable[[int], int],
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Serves `requests` requests of one context, learning after each.

        Per request: VW's pmf over `actions`, an action sampled from it with `rng`,
        `reward(index)` (0/1 click) and one learning step on (action, cost, probability).

        Args:
            shared: context features, the shared namespace `c`.
            actions: one feature dict per candidate, the action namespace `a`.
            cpc: [len(actions)] cost per click of each candidate (for `cost="revenue"`).
            requests: number of requests (>= 0).
            reward: index -> click (0 or 1), drawn by the simulator.
            rng: generator that samples the served action from the pmf.

        Returns:
            (chosen indices [requests] int64, clicks [requests] int64); `self.propensities`
            holds the pmf value of each chosen index.
        """
        if self._workspace is None:
            raise RuntimeError(f"{self.name} was finished; create a new bandit.")
        num_actions = len(actions)
        cpc = np.asarray(cpc, dtype=float)
        if num_actions == 0 or cpc.shape != (num_actions,):
            raise ValueError(f"need >= 1 action and one cpc per action. Received: "
                             f"{num_actions} actions, cpc.shape={cpc.shape}")
        if not isinstance(requests, (int, np.integer)) or requests < 0:
            raise ValueError(f"requests must be an integer >= 0. Received: requests={requests!r}")
        value = self._values(cpc)
        chosen = np.zeros(requests, dtype=np.int64)
        clicks = np.zeros(requests, dtype=np.int64)
        self.propensities = np.zeros(requests)
        if requests == 0:
            return chosen, clicks
        ws = self._workspace
        action_text, examples = self._parse(shared, actions)
        try:
            for r in range(requests):
                pmf = np.asarray(ws.predict(examples), dtype=float)
                cdf = np.cumsum(pmf)
                k = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")),
                        num_actions - 1)
                click = int(reward(k))
                if click not in (0, 1):
                    raise ValueError(f"reward must return 0 or 1. Received: {click!r}")
                chosen[r], clicks[r], self.propensities[r] = k, click, pmf[k]
                self._learn_one(examples, action_text, k, -click * value[k], pmf[k])
        finally:
            ws.finish_example(examples)
        return chosen, clicks

    def learn(self, shared: Mapping[str, str], actions: Sequence[Mapping[str, "str | list[str]"]],
              cpc: np.ndarray, chosen: np.ndarray, clicks: np.ndarray,
              probabilities: np.ndarray) -> None:
        """Learns from logged decisions of another policy (e.g. the simulator's random
        day 0): one IPS update `(chosen[r], -click x value, probabilities[r])` per row, in
        order, the same update `serve` makes after its own decisions."""
        if self._workspace is None:
            raise RuntimeError(f"{self.name} was finished; create a new bandit.")
        chosen, clicks = np.asarray(chosen, np.int64), np.asarray(clicks, np.int64)
        probabilities = np.asarray(probabilities, np.float64)
        if not (chosen.shape == clicks.shape == probabilities.shape) or chosen.ndim != 1:
            raise ValueError(f"chosen, clicks and probabilities need one shape [R]. Received: "
                             f"{chosen.shape}, {clicks.shape}, {probabilities.shape}")
        if len(chosen) and (chosen.min() < 0 or chosen.max() >= len(actions)
                            or not np.all((probabilities > 0) & (probabilities <= 1))):
            raise ValueError("chosen must index actions and probabilities be in (0, 1].")
        cpc = np.asarray(cpc, dtype=float)
        if cpc.shape != (len(actions),):
            raise ValueError(f"need one cpc per action. Received: {len(actions)} actions, "
                             f"cpc.shape={cpc.shape}")
        value = self._values(cpc)
        action_text, examples = self._parse(shared, actions)
        try:
            for k, click, p in zip(chosen, clicks, probabilities):
                self._learn_one(examples, action_text, k, -click * value[k], p)
        finally:
            self._workspace.finish_example(examples)

    def _values(self, cpc: np.ndarray) -> np.ndarray:
        """Value of a click on each action, in [0, 1] (module docstring, costs)."""
        if self.config.cost != "revenue":
            return np.ones(len(cpc))
        if not (np.all(np.isfinite(cpc)) and np.all(cpc >= 0) and cpc.max() > 0):
            raise ValueError(f"cost='revenue' needs finite cpc >= 0 with max > 0. "
                             f"Received: cpc={cpc}")
        return cpc / cpc.max()

    def _parse(self, shared, actions):
        """The actions' text lines and the parsed multi-line example (parsed once per call)."""
        action_text = [f"|{ACTION_NAMESPACE} {features(action)}" for action in actions]
        return action_text, self._workspace.parse(
            [f"shared |{SHARED_NAMESPACE} {features(shared)}"] + action_text)

    def _learn_one(self, examples, action_text, k: int, cost: float, probability: float):
        """One IPS update on action `k`: only its labelled line is parsed anew."""
        ws = self._workspace
        labelled = ws.example(f"0:{cost:.9g}:{probability:.9g} {action_text[k]}")
        ws.learn(examples[:k + 1] + [labelled] + examples[k + 2:])

    def finish(self):
        """Releases the VW workspace (idempotent)."""
        if self._workspace is not None:
            self._workspace.finish()
            self._workspace = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()

"""`ModelConfig`: the architecture and optimiser of a REG, MDN, DDN or BBDDN model."""

from __future__ import annotations

import dataclasses

__all__ = ["DENSITY_KINDS", "MODEL_KINDS", "ModelConfig"]

MODEL_KINDS = ("reg", "mdn", "ddn", "bbddn")
DENSITY_KINDS = ("mdn", "ddn", "bbddn")


def _units(value) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    return tuple(int(v) for v in value)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the towers, fusion MLP and head (DESIGN.md, "The model").

    Attributes mirror the keras-tuner search space of `tfddn.tuning`.
    """

    kind: str = dataclasses.field(default="ddn", metadata={
        "help": "reg: sigmoid point estimate + MSE; mdn: Gaussian mixture + NLL; "
                "ddn: mixture convolved with binomial measurement noise + NLL (the paper's); "
                "bbddn: Beta mixture + exact Beta-Binomial NLL (recommended when rows have "
                "few impressions, e.g. impression-level logs)",
        "choices": MODEL_KINDS})
    embedding_dim: int = dataclasses.field(default=16, metadata={
        "help": "embedding size of every categorical, token and history feature"})
    tower_units: tuple[int, ...] = dataclasses.field(default=(64,), metadata={
        "help": "Dense+ReLU+Dropout units of the target and context towers, e.g. '64,32'"})
    fusion_units: tuple[int, ...] = dataclasses.field(default=(64, 32), metadata={
        "help": "Dense+ReLU+Dropout units of the fusion MLP joining the towers"})
    dropout: float = dataclasses.field(default=0.1, metadata={
        "help": "dropout rate after every hidden layer (also the MC-dropout rate)"})
    num_components: int = dataclasses.field(default=3, metadata={
        "help": "mixture components (mdn, ddn: Gaussian; bbddn: Beta)"})
    oov_rate: float = dataclasses.field(default=0.02, metadata={
        "help": "share of categorical values replaced by OOV during training"})
    learning_rate: float = dataclasses.field(default=1e-3, metadata={
        "help": "Adam learning rate"})
    min_stddev: float = dataclasses.field(default=1e-3, metadata={
        "help": "floor on every Gaussian component's stddev (mdn, ddn)"})
    min_concentration: float = dataclasses.field(default=1.0, metadata={
        "help": "floor on every Beta component's concentration alpha + beta (bbddn)"})
    history_attention: bool = dataclasses.field(default=False, metadata={
        "help": "pool each browsing history with attention whose query is the target "
                "(Naor et al.) instead of the mean; the weights are exposed by "
                "tfddn.models.builder.attention_model"})
    interaction_attention: bool = dataclasses.field(default=False, metadata={
        "help": "multi-head self-attention over the feature (field) embeddings, added to "
                "the fusion input (Naor et al.); the attention map is exposed by "
                "tfddn.models.builder.attention_model"})
    attention_heads: int = dataclasses.field(default=2, metadata={
        "help": "heads of the feature-interaction attention"})

    def __post_init__(self):
        object.__setattr__(self, "tower_units", _units(self.tower_units))
        object.__setattr__(self, "fusion_units", _units(self.fusion_units))
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {list(MODEL_KINDS)}. Received: kind={self.kind!r}")
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1. Received: {self.embedding_dim}")
        if not self.fusion_units or any(u < 1 for u in self.tower_units + self.fusion_units):
            raise ValueError("fusion_units needs at least one layer and every unit count must "
                             f"be >= 1. Received: tower_units={self.tower_units}, "
                             f"fusion_units={self.fusion_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: dropout={self.dropout}")
        if self.num_components < 1:
            raise ValueError(f"num_components must be >= 1. Received: {self.num_components}")
        if not 0.0 <= self.oov_rate < 1.0:
            raise ValueError(f"oov_rate must be in [0, 1). Received: oov_rate={self.oov_rate}")
        if not self.min_concentration > 0:
            raise ValueError(f"min_concentration must be > 0. "
                             f"Received: {self.min_concentration}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0. Received: {self.learning_rate}")
        for name in ("history_attention", "interaction_attention"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool. Received: "
                                f"{name}={getattr(self, name)!r}")
        if (isinstance(self.attention_heads, bool) or not isinstance(self.attention_heads, int)
                or self.attention_heads < 1):
            raise ValueError("attention_heads must be an integer >= 1. "
                             f"Received: attention_heads={self.attention_heads!r}")

    @property
    def has_attention(self) -> bool:
        """Whether the model exposes attention weights (`attention_model`)."""
        return self.history_attention or self.interaction_attention

    @property
    def is_density(self) -> bool:
        return self.kind in DENSITY_KINDS

    @property
    def family(self) -> str | None:
        """The mixture family of the head: "gaussian" (mdn, ddn), "beta" (bbddn), None (reg)."""
        return {"mdn": "gaussian", "ddn": "gaussian", "bbddn": "beta"}.get(self.kind)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["tower_units"] = list(self.tower_units)
        out["fusion_units"] = list(self.fusion_units)
        return out

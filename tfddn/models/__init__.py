"""REG / MDN / DDN models built from the feature spec."""

from tfddn.models.builder import (DENSITY_NAME, ENCODER_NAME, attention_model, build_model,
                                  feature_inputs)
from tfddn.models.config import MODEL_KINDS, ModelConfig

__all__ = ["DENSITY_NAME", "ENCODER_NAME", "MODEL_KINDS", "ModelConfig", "attention_model",
           "build_model", "feature_inputs"]

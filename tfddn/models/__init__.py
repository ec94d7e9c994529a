"""REG / MDN / DDN models built from the feature spec.

`ModelConfig` (`tfddn.models.config`) imports without TensorFlow; the builder's names
load it on first use, so `tfddn train --help` stays instant.
"""

from tfddn.models.config import MODEL_KINDS, ModelConfig

__all__ = ["DENSITY_NAME", "ENCODER_NAME", "MODEL_KINDS", "ModelConfig", "attention_model",
           "build_model", "feature_inputs"]

_BUILDER = ("DENSITY_NAME", "ENCODER_NAME", "attention_model", "build_model", "feature_inputs")


def __getattr__(name):  # PEP 562: TensorFlow only when a builder name is used
    if name in _BUILDER:
        from tfddn.models import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'tfddn.models' has no attribute {name!r}")

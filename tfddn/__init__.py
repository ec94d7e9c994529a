"""tfddn: Deep Density Networks for uncertainty-aware CTR prediction.

Importing `tfddn` is cheap: TensorFlow is only imported by the modules that need it
(`tfddn.data`, the models), so Beam workers and the CLI start fast.
"""

from tfddn.spec import Feature, FeatureSpec, SpecError, load_spec

__version__ = "0.1.0"

__all__ = ["Feature", "FeatureSpec", "SpecError", "load_spec", "__version__"]

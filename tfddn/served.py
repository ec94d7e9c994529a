"""A served model (TF Serving or `tfddn serve`) as a source of predictions, and its spec.

The library never talks to a server itself: a client object is passed in, anything with
`predict(columns, signature_name, transport=...)` and `metadata(transport)` in TF
Serving's JSON form (`serving.client.ServingClient`).

**The spec from the server.** TF Serving's GetModelMetadata answers one metadata field,
`signature_def`: the SavedModel's SignatureDefMap copied verbatim, nothing from its assets
(tensorflow/serving, `tensorflow_serving/servables/tensorflow/get_model_metadata_impl.cc`,
`ValidateGetModelMetadataRequest` / `SavedModelGetSignatureDef`). So `tfddn export` adds
a `spec` signature (`SPEC_SIGNATURE`): its def in the metadata says the export carries
its feature spec, and one Predict call on it (input `row` `[B]` int64, any values;
output `spec` `[B]` string, the spec's JSON in every row) returns the spec. Row and
columnar requests, REST and gRPC, all work with an unmodified TF Serving.

Example:
    >>> client = ServingClient("http://localhost:8501", model_name="ddn")
    >>> spec = served_spec(client)
    >>> scores = ServedModel(client).predict(spec, candidates_x_context)
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from tfddn.distributions import Mixture
from tfddn.spec import FeatureSpec
from tfddn.tables import feature_columns

__all__ = ["SPEC_INPUT", "SPEC_OUTPUT", "SPEC_SIGNATURE", "ServedModel", "served_spec"]

SPEC_SIGNATURE = "spec"
"""The exported signature that returns the feature spec as JSON."""
SPEC_INPUT = "row"
"""Its one input, `[B]` int64 (values unused: TF Serving's requests need an input)."""
SPEC_OUTPUT = "spec"
"""Its one output, `[B]` string: the spec's JSON (`FeatureSpec.to_dict`) in every row."""


def served_spec(client, transport: str = "rest") -> FeatureSpec:
    """The feature spec of a served tfddn export, from its `spec` signature.

    Raises:
        ValueError: the served model has no `spec` signature (exported before it
            existed, or not by `tfddn export`), or its answer is not a spec.
    """
    metadata = client.metadata(transport)
    defs = metadata.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
    name = getattr(client, "model_name", "?")
    if SPEC_SIGNATURE not in defs:
        raise ValueError(f"the served model {name!r} has no {SPEC_SIGNATURE!r} signature "
                         f"(exported by an older `tfddn export`?): pass --spec, or export it "
                         f"again. Received signatures: {sorted(defs)}")
    answer = client.predict({SPEC_INPUT: [0]}, SPEC_SIGNATURE, transport=transport)
    text = np.asarray(answer[SPEC_OUTPUT]).reshape(-1)[0]
    try:
        return FeatureSpec.from_dict(json.loads(text.decode() if isinstance(text, bytes)
                                                else text))
    except ValueError as error:  # json.JSONDecodeError and SpecError are ValueErrors
        raise ValueError(f"the {SPEC_SIGNATURE!r} signature of the served model {name!r} "
                         f"returned no valid spec: {error}") from None


class ServedModel:
    """Predictions of a served model: the `mc_dropout` signature (mean, data, model and
    total stddev of T passes in the server's graph) and, with `mixture=True` (Thompson,
    posterior policies), `serving_default`'s mixture (one deterministic pass).

    Args:
        client: e.g. `serving.client.ServingClient`.
        transport: `"rest"` or `"grpc"`.
        mixture: also fetch the mixture parameters.
    """

    def __init__(self, client, transport: str = "rest", mixture: bool = False):
        self.client, self.transport, self.mixture = client, transport, mixture

    def spec(self) -> FeatureSpec:
        """The served model's feature spec (`served_spec`)."""
        return served_spec(self.client, self.transport)

    @staticmethod
    def columns(spec: FeatureSpec, frame: pd.DataFrame) -> dict[str, list]:
        """`frame`'s features as the signatures take them: as logged (`Feature.raw`)."""
        columns = feature_columns(spec, frame)
        for f in spec.features:
            if f.is_sequence:
                columns[f.name] = [f.raw(v) for v in columns[f.name]]
        return columns

    def predict(self, spec: FeatureSpec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        columns = self.columns(spec, frame)
        out = self.client.predict(columns, "mc_dropout", transport=self.transport)
        out = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
        if self.mixture:
            default = self.client.predict(columns, "serving_default", transport=self.transport)
            if "mixture_weights" not in default:  # REG: no distribution
                return out
            weights = np.asarray(default["mixture_weights"], dtype=np.float64)
            family = "beta" if "mixture_concentrations" in default else "gaussian"
            scales = default["mixture_concentrations" if family == "beta" else "mixture_stddevs"]
            out["mixture"] = Mixture(weights, default["mixture_means"], scales,
                                     family).params()[None]
            out["num_components"] = weights.shape[-1]
            out["family"] = family
        return out

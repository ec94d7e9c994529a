"""`tfddn predict`: per-row predictions of a split or a raw file (`tfddn.predict`)."""

from __future__ import annotations

__all__ = ["run"]


def run(config, args=None) -> int:
    """Writes `config.out` (a `tfddn.configs.PredictConfig`) and prints one line."""
    from tfddn.predict import predict_rows

    result = predict_rows(config)
    print(f"wrote {result['rows']:,} rows of {result['source']} with "
          f"{', '.join(result['predictions'])} to {result['out']}")
    return 0

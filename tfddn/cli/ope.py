"""`tfddn ope`: the off-policy value of a policy from logs with propensities.

    tfddn ope --logs logs.parquet --candidates candidates.parquet --run_dir RUN \\
        --policy ucb --c 1 [--context_key publisher_id] [--out ope.json]
    tfddn ope ... --rest_url http://127.0.0.1:8501 --model_name ddn   # a served model

prints IPS, SNIPS and DR (CTR per impression and, with a `cpc` column, RPM) with their
bootstrap intervals, beside the logging policy's own CTR; warnings go to stderr.
See `tfddn.ope` and docs/OPE.md for the logs format.
"""

from __future__ import annotations

import sys

from tfddn.configs import OPEConfig

__all__ = ["format_estimates", "run"]


def format_estimates(result: dict) -> str:
    """A short table of `tfddn.ope.run_ope`'s result."""
    policy = result["policy"]
    level = f"{100 * result['confidence']:g}%"
    metrics = [m for m in ("ctr", "rpm") if m in result["logged"]]
    lines = [f"policy {policy['name']}: {result['rows']:,} log rows, "
             f"{result['impressions']:,.0f} impressions, {result['contexts']:,} contexts, "
             f"effective sample size {result['effective_sample_size']:,.1f}",
             f"{'estimator':<10}" + "".join(f"{m.upper():>12}{level + ' interval':>24}"
                                            for m in metrics)]
    digits = {"ctr": 5, "rpm": 2}
    for name, values in result["estimates"].items():
        row = f"{name.upper():<10}"
        for m in metrics:
            v, d = values[m], digits[m]
            interval = f"[{v['low']:.{d}f}, {v['high']:.{d}f}]"
            row += f"{v['value']:>12.{d}f}{interval:>24}"
        lines.append(row)
    lines.append(f"{'logged':<10}" + "".join(f"{result['logged'][m]:>12.{digits[m]}f}{'':>24}"
                                             for m in metrics))
    return "\n".join(lines)


def run(config: OPEConfig, args=None) -> int:
    """Runs `tfddn.ope.run_ope` and prints the estimates (warnings on stderr); `args`, the
    parsed command line, is unused."""
    from tfddn.cli.rank import model_source
    from tfddn.configs import check_one_model
    from tfddn.ope import run_ope
    from tfddn.uncertainty import seed_dropout

    check_one_model(config)
    source, _, client = model_source(config)
    try:
        if hasattr(source, "model"):  # a loaded run: the same masks, the same estimates
            seed_dropout(source.model, config.seed)
        result = run_ope(config, source)
    finally:
        if client is not None:
            client.close()
    for warning in result["warnings"]:
        print(f"tfddn ope: warning: {warning}", file=sys.stderr)
    print(format_estimates(result))
    if config.out:
        print(f"wrote {config.out}")
    return 0

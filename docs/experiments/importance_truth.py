"""Does the DDN's uncertainty-based feature importance find the generator's true drivers?

Zeldes et al. (2018, Fig. 4) rank features by how much the predicted *data* stddev
grows when the feature is set to OOV. On generated logs the truth is known: the
generator's `world.json` records each feature's share of the variance of the true
CTR logit (`true_importance`). This script

1. generates `--rows` aggregated rows (`tfddn generate`) and preprocesses them;
2. trains a DDN for a few epochs (dropout > 0, OOV replacement during training);
3. computes, over the eval split, the OOV data-stddev ratio of every categorical,
   token and history feature (`tfddn.explain.feature_importance`), and the MC-dropout
   model-stddev ratio with `--mc_samples` passes;
4. reports whether the median data ratio is > 1 for every feature, and the Spearman
   rank correlation between the features' median ratios and their true shares;
5. marginalises `--groups` of features together (e.g. `publisher_id+publisher_topic`):
   one-at-a-time OOV misses a feature whose information another feature still
   carries (a publisher's topic is a function of the publisher), a group does not.

Generator components map onto spec features as follows: `advertiser_id`, `target_id`,
`publisher_id`, `title` (and `history`) are features themselves; the interactions
`target_topic*publisher_topic` and `device*target_topic` are split equally between
their two features; `age_days` is numeric (not marginalised) and left out.

Example:
    .venv/bin/python docs/experiments/importance_truth.py --out_dir runs/importance_truth
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy import stats

_INTERACTION_SEPARATOR = "*"


def spec_shares(true_importance: dict, features) -> dict[str, float]:
    """The generator's logit-variance shares, mapped onto spec feature names."""
    shares = dict.fromkeys(features, 0.0)
    for component, entry in true_importance["features"].items():
        parts = [p for p in component.split(_INTERACTION_SEPARATOR) if p in shares]
        for part in parts:
            shares[part] += entry["share"] / len(component.split(_INTERACTION_SEPARATOR))
    return shares


def group_ratios(model, model_config, data_dir: str, groups, max_rows=None,
                 batch_size: int = 2048) -> dict[str, float]:
    """Median data-stddev ratio over the eval split with each group set to OOV at once."""
    from tfddn import data
    from tfddn.explain import marginalise
    from tfddn.uncertainty import predictive_moments

    spec = data.load_data_spec(data_dir)
    dataset = data.make_dataset(data.split_files(data_dir, "eval"), spec,
                                data.InputConfig(batch_size=batch_size, shuffle=False))
    if max_rows is not None:
        dataset = dataset.unbatch().take(max_rows).batch(batch_size)
    ratios = {group: [] for group in groups}
    for features, _ in dataset:
        _, base = predictive_moments(model(features, training=False), model_config)
        for group in groups:
            changed = dict(features, **{n: marginalise(features[n], spec.feature(n))
                                        for n in group})
            _, stddev = predictive_moments(model(changed, training=False), model_config)
            ratios[group].append((stddev / base).numpy())
    return {"+".join(g): float(np.median(np.concatenate(r))) for g, r in ratios.items()}


def _groups(text: str) -> list[tuple[str, ...]]:
    return [tuple(g.split("+")) for g in text.split(",") if g]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", default="runs/importance_truth")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--regime", default="d2", choices=("d1", "d2"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--oov_rate", type=float, default=0.05)
    p.add_argument("--mc_samples", type=int, default=16,
                   help="MC-dropout passes for the model-stddev ratio (0: skip)")
    p.add_argument("--max_rows", type=int, default=None, help="eval rows (default: all)")
    p.add_argument("--groups", type=_groups,
                   default="publisher_id+publisher_topic,target_id+title,"
                           "target_id+title+advertiser_id",
                   help="comma-separated groups of features marginalised together")
    return p


def run(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    from beam import preprocess
    from tfddn import training
    from tfddn.explain import feature_importance, write_importance_report
    from tfddn.generate import GenerateConfig, generate
    from tfddn.models.config import ModelConfig

    start = time.time()
    logs_dir, data_dir = (os.path.join(args.out_dir, d) for d in ("logs", "data"))
    run_dir = os.path.join(args.out_dir, "ddn")
    logs = generate(GenerateConfig(out_dir=logs_dir, rows=args.rows, regime=args.regime,
                                   seed=args.seed), progress=False)
    preprocess.run(["--input", logs.logs_path, "--spec", logs.spec_path, "--output", data_dir,
                    "--overwrite"])
    model_config = ModelConfig(kind="ddn", dropout=args.dropout, oov_rate=args.oov_rate)
    summary = training.train(training.TrainConfig(
        data_dir=data_dir, run_dir=run_dir, epochs=args.epochs, patience=2, seed=args.seed,
        verbose=2), model_config)
    model, model_config, _ = training.load_run(run_dir)
    result = feature_importance(model, model_config, data_dir, "eval", args.max_rows,
                                args.mc_samples, batch_size=512)
    write_importance_report(result, os.path.join(args.out_dir, "importance"))
    medians = np.median(result.data_ratio, axis=0)
    with open(logs.world_path) as fh:
        world = json.load(fh)
    shares = spec_shares(world["true_importance"], result.feature_names)
    rho, p_value = stats.spearmanr(medians, [shares[n] for n in result.feature_names])
    groups = group_ratios(model, model_config, data_dir, args.groups, args.max_rows)
    report = {
        "command": " ".join([".venv/bin/python docs/experiments/importance_truth.py", *argv]),
        "rows": args.rows, "regime": args.regime, "eval_rows": result.rows,
        "epochs_run": summary["epochs_run"], "best_val_loss": summary["best_val_loss"],
        # A row whose value is already OOV (too rare for the vocabulary) gives exactly 1.
        "features": {n: {"median_data_ratio": float(m), "true_share": shares[n],
                         "oov_share": float(np.mean(result.data_ratio[:, j] == 1.0)),
                         **({"median_model_ratio": float(np.median(result.model_ratio[:, j]))}
                            if result.model_ratio is not None else {})}
                     for j, (n, m) in enumerate(zip(result.feature_names, medians))},
        "all_median_data_ratios_above_1": bool(np.all(medians > 1.0)),
        "spearman_median_data_ratio_vs_true_share": float(rho),
        "spearman_p_value": float(p_value),
        "median_data_ratio_of_groups": groups,
        "seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(args.out_dir, "importance_truth.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"\n{'feature':<16}{'median data ratio':>19}{'median model ratio':>20}"
          f"{'true share':>12}{'rows at 1':>11}")
    for name, entry in sorted(report["features"].items(),
                              key=lambda kv: -kv[1]["median_data_ratio"]):
        model_ratio = entry.get("median_model_ratio", float("nan"))
        print(f"{name:<16}{entry['median_data_ratio']:>19.4f}{model_ratio:>20.4f}"
              f"{entry['true_share']:>12.3f}{entry['oov_share']:>11.1%}")
    print(f"\nmedian data ratio > 1 for every feature: "
          f"{report['all_median_data_ratios_above_1']}")
    print(f"Spearman(median data ratio, true share) = {rho:.3f} (p = {p_value:.3f}, "
          f"{len(medians)} features)")
    for group, median in groups.items():
        print(f"group {group}: median data ratio {median:.4f}")
    print(f"{report['seconds']} s")
    return report


if __name__ == "__main__":
    run()

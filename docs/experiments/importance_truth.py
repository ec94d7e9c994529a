"""Does the DDN's uncertainty-based feature importance find the generator's true drivers?

Zeldes et al. (2018, Fig. 4) rank features by how much the predicted *data* stddev
grows when the feature is set to OOV. On generated logs the truth is known, so for
every eval row this script sets side by side

* the **model's ratio**: DDN data stddev with the feature(s) set to OOV / without
  (`tfddn.explain.feature_saliency`; groups: every feature of the group at once), and
* the **oracle's ratio**: the true CTR's stddev when the world forgets the same
  feature(s) / the true stddev (`Marketplace.marginal_moments`: the Bayes answer of an
  observer who knows the world exactly but not those features).

It does so for single features and for *groups*. The world's `title`,
`advertiser_id` and `target_topic` are functions of `target_id`, and
`publisher_topic` of `publisher_id`: forgetting one of them alone loses nothing an
ideal model could not read off the others (its ideal ratio is 1), while the oracle above
forgets it outright. The groups below are the ones whose forgotten part the remaining
features say nothing about (the world draws target, publisher and device effects
independently), so for them the oracle is the exact ideal:

    target_id+title (the target's own effects, given advertiser and topic),
    target_id+title+advertiser_id, target (all four target features),
    publisher_id (given the publisher's topic), publisher (both), device.

Per seed it reports, for features and groups: the median model and oracle ratios, the
row-level Spearman correlation between them, whether every median model ratio is
> 1, and the Spearman correlation of the medians (the ordering of importance); for the
features also against the generator's logit-variance shares (`world.json`), the measure
earlier versions of this script used. With `--seeds 0,1,2` it adds mean and range over
seeds, and the test-retest noise of the MC-dropout model-stddev ratio with common
dropout masks (the default) and with independent masks.

Example (the run in docs/RESULTS.md):
    .venv/bin/python docs/experiments/importance_truth.py --out_dir runs/importance_truth \\
        --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np
from scipy import stats

from beam import preprocess
from tfddn import data, training
from tfddn.explain import OOV, feature_saliency
from tfddn.generate import GenerateConfig, generate
from tfddn.marketplace import DEVICES, Marketplace, Requests
from tfddn.models.config import ModelConfig

_INTERACTION_SEPARATOR = "*"
GROUPS = {
    "target_id+title": ("target_id", "title"),
    "target_id+title+advertiser_id": ("target_id", "title", "advertiser_id"),
    "target": ("target_id", "title", "advertiser_id", "target_topic"),
    "publisher_id": ("publisher_id",),
    "publisher": ("publisher_id", "publisher_topic"),
    "device": ("device",),
}


def spec_shares(true_importance: dict, features) -> dict[str, float]:
    """The generator's logit-variance shares, mapped onto spec feature names."""
    shares = dict.fromkeys(features, 0.0)
    for component, entry in true_importance["features"].items():
        parts = component.split(_INTERACTION_SEPARATOR)
        for part in (p for p in parts if p in shares):
            shares[part] += entry["share"] / len(parts)
    return shares


def _indices(values, pattern: str) -> np.ndarray:
    regex = re.compile(pattern)
    return np.array([int(regex.fullmatch(v.decode()).group(1)) for v in values])


def requests_from_features(world: Marketplace, features) -> Requests:
    """The world's requests behind a batch of raw feature values (aggregated D1/D2 rows)."""
    target = _indices(features["target_id"].numpy(), r"t(\d+)")
    device = np.array([DEVICES.index(v.decode()) for v in features["device"].numpy()])
    age = np.rint(features["age_days"].numpy()).astype(np.int64)
    return Requests(target=target, publisher=_indices(features["publisher_id"].numpy(),
                                                      r"pub(\d+)"),
                    device=device, day=age - world.target_age0[target])


def ratios_for_batch(model, model_config, spec, world, features, names, rng, mc_samples,
                     draws):
    """Model and oracle ratios `[B]` per feature and per group, for one batch."""
    groups = ["+".join(members) for members in GROUPS.values()]
    out = feature_saliency(model, features, model_config, spec, (OOV,), [*names, *groups],
                           mc_samples)[OOV]
    units = {**{n: (n,) for n in names},
             **{f"group:{g}": members for g, members in GROUPS.items()}}
    model_ratio = {unit: out["saliency_data_stddev"][:, j].numpy()
                   for j, unit in enumerate(units)}
    req = requests_from_features(world, features)
    _, true_base = world.marginal_moments(req, [], rng)
    oracle = {unit: world.marginal_moments(req, members, rng, draws)[1] / true_base
              for unit, members in units.items()}
    model_stddev = {}
    if mc_samples:
        model_stddev = {n: out["saliency_model_stddev"][:, j].numpy()
                        for j, n in enumerate(names)}
    return model_ratio, oracle, model_stddev


def retest_noise(model, model_config, spec, features, names, mc_samples) -> dict:
    """Median |log ratio(call 1) - log ratio(call 2)| of the model-stddev saliency:
    common dropout masks (the library's default) against independent masks."""
    def twice(common_masks):
        calls = [feature_saliency(model, features, model_config, spec, (OOV,), names,
                                  mc_samples, common_masks)[OOV]["saliency_model_stddev"]
                 .numpy() for _ in range(2)]
        return float(np.median(np.abs(np.log(calls[0]) - np.log(calls[1]))))

    return {"common_masks": twice(True), "independent_masks": twice(False)}


def _summary(model_ratio: dict, oracle: dict, units) -> dict:
    rows = {}
    for unit in units:
        m, o = model_ratio[unit], oracle[unit]
        rows[unit] = {"model_median": float(np.median(m)), "oracle_median": float(np.median(o)),
                      "row_spearman": float(stats.spearmanr(m, o)[0]),
                      "model_share_at_1": float(np.mean(m == 1.0))}
    medians_model = [rows[u]["model_median"] for u in units]
    medians_oracle = [rows[u]["oracle_median"] for u in units]
    return {"units": rows,
            "all_model_medians_above_1": bool(np.all(np.array(medians_model) > 1.0)),
            "spearman_medians_model_vs_oracle": float(
                stats.spearmanr(medians_model, medians_oracle)[0])}


def run_seed(args, seed: int) -> dict:
    start = time.time()
    out = os.path.join(args.out_dir, f"seed{seed}")
    logs = generate(GenerateConfig(out_dir=os.path.join(out, "logs"), rows=args.rows,
                                   regime=args.regime, seed=seed), progress=False)
    data_dir = os.path.join(out, "data")
    preprocess.run(["--input", logs.logs_path, "--spec", logs.spec_path, "--out_dir", data_dir,
                    "--overwrite"])
    run_dir = os.path.join(out, "ddn")
    summary = training.train(training.TrainConfig(
        data_dir=data_dir, run_dir=run_dir, epochs=args.epochs, patience=args.patience,
        seed=seed, verbose=2), ModelConfig(kind="ddn", dropout=args.dropout,
                                           oov_rate=args.oov_rate))
    model, model_config, _ = training.load_run(run_dir)
    spec = data.load_data_spec(data_dir)
    with open(logs.world_path) as fh:
        world_json = json.load(fh)
    world = Marketplace(GenerateConfig(**world_json["config"]).world_config())
    names = [f.name for f in spec.features if f.has_vocabulary]
    dataset = data.make_dataset(data.split_files(data_dir, "eval"), spec,
                                data.InputConfig(batch_size=args.batch_size, shuffle=False))
    rng = np.random.default_rng([seed, 5])
    parts, noise = [], None
    for features, _ in dataset.unbatch().take(args.max_rows).batch(args.batch_size):
        parts.append(ratios_for_batch(model, model_config, spec, world, features, names, rng,
                                      args.mc_samples, args.draws))
        if noise is None and args.mc_samples:
            noise = retest_noise(model, model_config, spec, features, names, args.mc_samples)
    model_ratio, oracle, model_stddev = (
        {k: np.concatenate([p[i][k] for p in parts]) for k in parts[0][i]} for i in range(3))
    shares = spec_shares(world_json["true_importance"], names)
    features_summary = _summary(model_ratio, oracle, names)
    features_summary["spearman_medians_model_vs_logit_share"] = float(stats.spearmanr(
        [features_summary["units"][n]["model_median"] for n in names],
        [shares[n] for n in names])[0])
    for n in names:
        features_summary["units"][n]["logit_share"] = shares[n]
        if model_stddev:
            features_summary["units"][n]["model_stddev_median"] = float(
                np.median(model_stddev[n]))
    groups = [f"group:{g}" for g in GROUPS]
    return {"seed": seed, "eval_rows": int(len(model_ratio[names[0]])),
            "epochs_run": summary["epochs_run"], "best_val_loss": summary["best_val_loss"],
            "features": features_summary, "groups": _summary(model_ratio, oracle, groups),
            "model_stddev_retest_median_abs_log_diff": noise,
            "seconds": round(time.time() - start, 1)}


def _print_seed(result: dict) -> None:
    print(f"\nseed {result['seed']}: {result['eval_rows']} eval rows, "
          f"{result['epochs_run']} epochs, {result['seconds']} s")
    print(f"{'feature / group':<34}{'model median':>13}{'oracle median':>14}"
          f"{'row Spearman':>13}{'at 1':>7}")
    for part in ("features", "groups"):
        for unit, row in result[part]["units"].items():
            print(f"{unit:<34}{row['model_median']:>13.3f}{row['oracle_median']:>14.3f}"
                  f"{row['row_spearman']:>13.2f}{row['model_share_at_1']:>7.1%}")
        print(f"  {part}: all model medians > 1: {result[part]['all_model_medians_above_1']}; "
              f"Spearman(model, oracle medians) = "
              f"{result[part]['spearman_medians_model_vs_oracle']:.2f}")
    print(f"  features: Spearman(model medians, logit shares) = "
          f"{result['features']['spearman_medians_model_vs_logit_share']:.2f}")
    if result["model_stddev_retest_median_abs_log_diff"]:
        print(f"  model-stddev ratio test-retest |log diff| (median): "
              f"{result['model_stddev_retest_median_abs_log_diff']}")


def aggregate(results: list[dict]) -> dict:
    """Mean, min and max over seeds of the headline figures."""
    def spread(values):
        values = np.asarray(values, dtype=float)
        return {"mean": float(values.mean()), "min": float(values.min()),
                "max": float(values.max())}

    out = {}
    for part in ("features", "groups"):
        units = results[0][part]["units"]
        out[part] = {
            "seeds_all_model_medians_above_1": sum(r[part]["all_model_medians_above_1"]
                                                   for r in results),
            "spearman_medians_model_vs_oracle": spread(
                [r[part]["spearman_medians_model_vs_oracle"] for r in results]),
            "units": {u: {key: spread([r[part]["units"][u][key] for r in results])
                          for key in ("model_median", "oracle_median", "row_spearman")}
                      for u in units}}
    out["features"]["spearman_medians_model_vs_logit_share"] = spread(
        [r["features"]["spearman_medians_model_vs_logit_share"] for r in results])
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", default="runs/importance_truth")
    p.add_argument("--seeds", default="0", help="comma-separated generator/training seeds")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--regime", default="d2", choices=("d1", "d2"))
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--oov_rate", type=float, default=0.05)
    p.add_argument("--mc_samples", type=int, default=16,
                   help="MC-dropout passes for the model-stddev ratio (0: skip)")
    p.add_argument("--draws", type=int, default=64,
                   help="oracle: draws of the forgotten features per row")
    p.add_argument("--max_rows", type=int, default=10_000, help="eval rows per seed")
    p.add_argument("--batch_size", type=int, default=1000)
    return p


def run(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        results.append(run_seed(args, seed))
        _print_seed(results[-1])
    report = {"command": " ".join([".venv/bin/python docs/experiments/importance_truth.py",
                                   *argv]),
              "args": vars(args), "seeds": results, "over_seeds": aggregate(results)}
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "importance_truth.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(report["over_seeds"], indent=1)[:4000])
    return report


if __name__ == "__main__":
    run()

"""`make demo`: the main job end to end on the bundled default marketplace.

Stages (each prints what it did):

1. generate a seeded synthetic marketplace (`tfddn generate`),
2. preprocess it with the Beam pipeline on the DirectRunner (`tfddn preprocess`),
3. read the TFRecords back with `tfddn.data` and check that every click and
   impression survived the trip.

Later stages (training, export, serving, exploration) extend this file as they land.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

__all__ = ["main"]


def _stage(number: int, total: int, title: str) -> float:
    print(f"\n[{number}/{total}] {title}", flush=True)
    return time.perf_counter()


def _done(start: float) -> None:
    print(f"      done in {time.perf_counter() - start:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfddn.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="working directory (default: demo_out)")
    parser.add_argument("--rows", type=int, default=200_000,
                        help="aggregated log rows to generate (default: 200000; the paper's "
                             "scale is --rows 10000000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--direct_num_workers", type=int, default=1,
                        help="DirectRunner worker processes for the Beam stage (default: 1, "
                             "in-process; 2+ runs multi_processing, faster on large inputs)")
    args = parser.parse_args(argv)
    # Keep the demo's output to what it says; Beam and TF log at INFO by default.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger().setLevel(logging.WARNING)

    from tfddn.cli import format_preprocess_summary
    from tfddn.generate import GenerateConfig, generate

    total = 3
    logs_dir = os.path.join(args.out, "logs")
    data_dir = os.path.join(args.out, "preprocessed")

    start = _stage(1, total, f"generate {args.rows:,} rows of marketplace logs -> {logs_dir}")
    result = generate(GenerateConfig(out_dir=logs_dir, rows=args.rows, seed=args.seed))
    print(result.summary())
    _done(start)

    start = _stage(2, total, f"Beam preprocessing (DirectRunner) -> {data_dir}")
    from beam import preprocess

    beam_args = ["--input", result.logs_path, "--spec", result.spec_path,
                 "--output", data_dir, "--overwrite"]
    if args.direct_num_workers > 1:
        beam_args += ["--direct_num_workers", str(args.direct_num_workers),
                      "--direct_running_mode", "multi_processing"]
    metadata = preprocess.run(beam_args)
    print(format_preprocess_summary(metadata))
    _done(start)

    start = _stage(3, total, "read the TFRecords back with tfddn.data")
    totals = _tfrecord_totals(data_dir)
    for split, (examples, clicks, impressions) in totals.items():
        ok = (examples == metadata["examples"][split]
              and clicks == metadata["clicks"][split]
              and impressions == metadata["impressions"][split])
        print(f"      {split:<5} {examples:>9,} examples {clicks:>9,} clicks "
              f"{impressions:>11,} impressions  {'matches metadata' if ok else 'MISMATCH'}")
        if not ok:
            print("demo: the TFRecords do not match metadata.json", file=sys.stderr)
            return 1
    _done(start)
    print(f"\nDemo finished. Preprocessed data: {data_dir}")
    return 0


def _tfrecord_totals(data_dir: str) -> dict[str, tuple[int, int, int]]:
    from tfddn import data

    spec = data.load_data_spec(data_dir)
    totals = {}
    for split in ("train", "eval"):
        ds = data.make_dataset(data.split_files(data_dir, split), spec,
                               data.InputConfig(batch_size=8192, shuffle=False))
        examples = clicks = impressions = 0
        for _, labels in ds:
            examples += int(labels["clicks"].shape[0])
            clicks += int(labels["clicks"].numpy().astype("int64").sum())
            impressions += int(labels["impressions"].numpy().astype("int64").sum())
        totals[split] = (examples, clicks, impressions)
    return totals


if __name__ == "__main__":
    sys.exit(main())

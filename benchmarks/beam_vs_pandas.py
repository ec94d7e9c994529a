"""Raw rows per second: the Beam pipeline against a single-process pandas groupby.

Both sides read the same generated CSV in the same run and aggregate clicks and
impressions per (all features, day). pandas does only that (no per-row validation,
no dead-letter, no vocabularies, no TFRecords), so it is the floor a one-machine
script gets; Beam does the full preprocessing and can scale out to any runner. Beam runs
with the batched engine (the default; in-process and on 2 worker processes) and with the
row-by-row reference engine (`--engine rows`).

    python benchmarks/beam_vs_pandas.py                 # 1M rows (issue #2)
    python benchmarks/beam_vs_pandas.py --rows 200000   # quicker

Prints rows/s for each and the ratio pandas/Beam (how much the full, validated,
scalable pipeline costs on one machine against the in-memory floor).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time


def _pandas_groupby(logs_path: str, spec) -> tuple[int, int, int]:
    import pandas as pd

    frame = pd.read_csv(logs_path, keep_default_na=False, dtype=str)
    keys = list(spec.feature_names)
    frame["_bucket"] = pd.to_numeric(frame[spec.timestamp]) // spec.time_bucket_seconds
    frame["_clicks"] = pd.to_numeric(frame[spec.clicks])
    frame["_impressions"] = pd.to_numeric(frame[spec.impressions])
    grouped = frame.groupby(keys + ["_bucket"], sort=False)[["_clicks", "_impressions"]].sum()
    return len(grouped), int(grouped["_clicks"].sum()), int(grouped["_impressions"].sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temp dir)")
    parser.add_argument("--direct_num_workers", type=int, default=2)
    args = parser.parse_args(argv)

    from beam import preprocess
    from tfddn.generate import GenerateConfig, generate
    from tfddn.spec import load_spec

    workdir = args.workdir or tempfile.mkdtemp(prefix="tfddn-bench-")
    try:
        logs = generate(GenerateConfig(out_dir=os.path.join(workdir, "logs"), rows=args.rows,
                                       seed=0), progress=True)
        spec = load_spec(logs.spec_path)

        start = time.perf_counter()
        groups, clicks, impressions = _pandas_groupby(logs.logs_path, spec)
        pandas_seconds = time.perf_counter() - start

        runs = {}
        for label, extra in [
            ("beam batched (default)", []),
            (f"beam batched, {args.direct_num_workers} processes",
             ["--direct_num_workers", str(args.direct_num_workers),
              "--direct_running_mode", "multi_processing"]),
            ("beam rows (reference engine)", ["--engine", "rows"]),
        ]:
            out = os.path.join(workdir, f"beam-{len(runs)}")
            start = time.perf_counter()
            metadata = preprocess.run(["--input", logs.logs_path, "--spec", logs.spec_path,
                                       "--out_dir", out] + extra)
            runs[label] = (time.perf_counter() - start, metadata)

        print(f"\nrows: {args.rows:,}  (CSV {os.path.getsize(logs.logs_path) / 2**20:.0f} MiB, "
              f"{os.cpu_count()} cores)")
        print(f"{'method':<36}{'seconds':>9}{'rows/s':>12}{'groups':>11}")
        print(f"{'pandas read_csv + groupby':<36}{pandas_seconds:>9.1f}"
              f"{args.rows / pandas_seconds:>12,.0f}{groups:>11,}")
        for label, (seconds, metadata) in runs.items():
            beam_groups = sum(metadata["examples"].values())
            print(f"{label:<36}{seconds:>9.1f}{args.rows / seconds:>12,.0f}{beam_groups:>11,}")
            if (beam_groups, sum(metadata["clicks"].values()),
                    sum(metadata["impressions"].values())) != (groups, clicks, impressions):
                print("MISMATCH: Beam and pandas disagree on the aggregate", file=sys.stderr)
                return 1
        for label, (seconds, _) in runs.items():
            print(f"ratio pandas/Beam rows per second, {label}: {seconds / pandas_seconds:.1f}x")
        return 0
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

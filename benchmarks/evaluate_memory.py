"""Max RSS and rows/s of `tfddn evaluate` at two eval sizes, side by side in one run.

    python benchmarks/evaluate_memory.py --data_dir DATA --run_dir RUN [--shares 0.25 1]
        [--ground_truth logs/ground_truth.parquet] [--in_memory]
    python benchmarks/evaluate_memory.py --rows 2300000   # generate, preprocess, train first

Each size is a view of DATA whose eval split holds a share of the eval shards (symlinks;
preprocess with `--num_shards 8` or so), and each evaluation runs in its own wrapper
process, so `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` is that evaluation's peak.
rows/s counts the whole command (start-up, model load, report). With `--in_memory`, the
pre-streaming path (`predict_split` -> `attach_ground_truth` -> `evaluation.evaluate` ->
`report.write_report`) is measured on the same views too.

With `--rows`, the logs are generated (7 days), preprocessed with the last 6 days in eval
(`--eval_buckets 6 --num_shards 8`) and a DDN is trained for one epoch, under `--out`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

_WRAPPER = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
_IN_MEMORY = """
import sys
from tfddn import evaluation, predict, report, training
run_dir, data_dir, out_dir, truth = sys.argv[1:5]
model, config, _ = training.load_run(run_dir)
predictions, frame = predict.predict_split(model, config, data_dir)
if truth:
    predictions, _ = predict.attach_ground_truth(predictions, frame, truth)
metrics = evaluation.evaluate(predictions)
report.write_report(metrics, predictions, out_dir, title="in memory")
"""


def _tfddn() -> str:
    return os.path.join(os.path.dirname(sys.executable), "tfddn")


def _prepare(out: str, rows: int) -> tuple[str, str, str]:
    """Generates, preprocesses and trains (one epoch of a DDN) under `out`."""
    logs, data_dir, run_dir = (os.path.join(out, name) for name in ("logs", "data", "run"))
    commands = [
        [_tfddn(), "generate", "--out_dir", logs, "--rows", str(rows), "--quiet"],
        [_tfddn(), "preprocess", "--input", os.path.join(logs, "logs.csv"), "--spec",
         os.path.join(logs, "spec.json"), "--out_dir", data_dir, "--eval_buckets", "6",
         "--num_shards", "8", "--overwrite"],
        [_tfddn(), "train", "--data_dir", data_dir, "--run_dir", run_dir, "--kind", "ddn",
         "--epochs", "1", "--batch_size", "1024", "--progress", "0", "--restart"],
    ]
    for command in commands:
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return data_dir, run_dir, os.path.join(logs, "ground_truth.parquet")


def _view(data_dir: str, share: float, out: str) -> str:
    """A data dir whose eval split is the first `share` of the eval shards (symlinks)."""
    shards = sorted(glob.glob(os.path.join(data_dir, "eval", "*.tfrecord.gz")))
    keep = shards[:max(1, round(share * len(shards)))]
    view = os.path.join(out, f"view_{len(keep)}_of_{len(shards)}")
    shutil.rmtree(view, ignore_errors=True)
    os.makedirs(os.path.join(view, "eval"))
    for name in os.listdir(data_dir):
        if name != "eval":
            os.symlink(os.path.abspath(os.path.join(data_dir, name)), os.path.join(view, name))
    for shard in keep:
        os.symlink(os.path.abspath(shard), os.path.join(view, "eval", os.path.basename(shard)))
    return view


def _measure(command: list[str], out_dir: str) -> dict:
    """Runs `command` in a wrapper process: its max RSS (MB), wall time, eval rows."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *command], check=True,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    with open(os.path.join(out_dir, "metrics.json")) as fh:
        rows = json.load(fh)["examples"]
    return {"rows": rows, "max_rss_mb": int(done.stdout.split()[-1]) / 1024,
            "seconds": seconds, "rows_per_s": rows / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir")
    parser.add_argument("--run_dir")
    parser.add_argument("--ground_truth", default="")
    parser.add_argument("--rows", type=int, default=0, help="prepare data of this many rows")
    parser.add_argument("--shares", type=float, nargs=2, default=(0.25, 1.0))
    parser.add_argument("--in_memory", action="store_true",
                        help="also measure the pre-streaming in-memory path")
    parser.add_argument("--out", default="/tmp/evaluate_memory_bench")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.rows:
        args.data_dir, args.run_dir, args.ground_truth = _prepare(args.out, args.rows)
    if not (args.data_dir and args.run_dir):
        parser.error("pass --data_dir and --run_dir, or --rows")
    paths = {"streaming": lambda view, out: [
        _tfddn(), "evaluate", "--run_dir", args.run_dir, "--data_dir", view, "--out_dir", out,
        *(["--ground_truth", args.ground_truth] if args.ground_truth else [])]}
    if args.in_memory:
        paths["in memory"] = lambda view, out: [
            sys.executable, "-c", _IN_MEMORY, args.run_dir, view, out, args.ground_truth]
    results = {}
    for share in args.shares:
        view = _view(args.data_dir, share, args.out)
        for name, command in paths.items():
            out_dir = os.path.join(args.out, f"report_{name.replace(' ', '_')}_{share}")
            result = _measure(command(view, out_dir), out_dir)
            results[name, share] = result
            print(f"{name:>10} share {share:<5} rows {result['rows']:>10,}  max RSS "
                  f"{result['max_rss_mb']:>8,.0f} MB  {result['seconds']:>6.1f} s  "
                  f"{result['rows_per_s']:>8,.0f} rows/s", flush=True)
    small, large = args.shares
    for name in paths:
        a, b = results[name, small], results[name, large]
        extra_mb = b["max_rss_mb"] - a["max_rss_mb"]
        print(f"{name}: rows x{b['rows'] / a['rows']:.2f} -> max RSS "
              f"x{b['max_rss_mb'] / a['max_rss_mb']:.2f} ({extra_mb:+,.0f} MB, "
              f"{extra_mb * 2**20 / (b['rows'] - a['rows']):,.0f} bytes per extra row), "
              f"rows/s x{b['rows_per_s'] / a['rows_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

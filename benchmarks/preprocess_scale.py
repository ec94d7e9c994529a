"""Preprocessing at scale: wall time, rows/s, CPU seconds and max RSS per engine and size.

Generates the paper-scale logs once (`tfddn generate --rows R --targets R/10
--publishers R/1000`, CSV; issue #15 used 10M / 1M / 10K), takes the first 1M, 3M, ...
rows of it for the smaller sizes, and runs `tfddn preprocess` on each in a subprocess
whose own resource usage (`os.wait4`) gives the CPU seconds and the max RSS:

    python benchmarks/preprocess_scale.py                         # 1M, 3M, 10M
    python benchmarks/preprocess_scale.py --rows 1000000 --engines batched,rows
    python benchmarks/preprocess_scale.py --workdir /data/bench   # keep the logs

Engines: `batched` (the default engine, in-process DirectRunner), `batched2` (the same
on 2 DirectRunner worker processes) and `rows` (the row-by-row reference engine; slow:
about 60 CPU s per million rows, so only at the sizes in `--rows_engine_max`).
Prints one table and the speed-up of each engine over `rows` where both ran.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ENGINES = {
    "batched": [],
    "batched2": ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
    "rows": ["--engine", "rows"],
}


def _tfddn() -> str:
    return os.path.join(os.path.dirname(sys.executable), "tfddn")


def _head(source: str, target: str, rows: int) -> None:
    """The header and the first `rows` rows of a generated CSV (one line per row)."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        for count, line in enumerate(src):
            if count > rows:
                break
            dst.write(line)


def _measure(argv: list[str]) -> dict:
    """Runs `argv`; its wall seconds, CPU seconds (user + sys) and max RSS in GB."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{stderr[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_gb": usage.ru_maxrss / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+",
                        default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--engines", default="batched,batched2,rows",
                        help=f"comma-separated, of {list(ENGINES)}")
    parser.add_argument("--rows_engine_max", type=int, default=1_000_000,
                        help="run the slow row engine only up to this many rows")
    parser.add_argument("--workdir", default=None, help="keep files here (default: temp)")
    args = parser.parse_args(argv)
    engines = args.engines.split(",")
    workdir = args.workdir or tempfile.mkdtemp(prefix="tfddn-scale-")
    largest = max(args.rows)
    logs_dir = os.path.join(workdir, f"logs-{largest}")
    logs = os.path.join(logs_dir, "logs.csv")
    try:
        if not os.path.exists(logs):
            print(f"generating {largest:,} rows into {logs_dir} ...", flush=True)
            _measure([_tfddn(), "generate", "--out_dir", logs_dir, "--rows", str(largest),
                      "--targets", str(largest // 10),
                      "--publishers", str(max(1, largest // 1000)), "--quiet"])
        spec = os.path.join(logs_dir, "spec.json")
        results = []
        for rows in sorted(args.rows):
            path = logs if rows == largest else os.path.join(workdir, f"logs-{rows}.csv")
            if not os.path.exists(path):
                _head(logs, path, rows)
            for engine in engines:
                if engine == "rows" and rows > args.rows_engine_max:
                    continue
                out = os.path.join(workdir, f"out-{rows}-{engine}")
                shutil.rmtree(out, ignore_errors=True)
                print(f"{rows:>12,} rows  {engine:<9}", end=" ", flush=True)
                run = _measure([_tfddn(), "preprocess", "--input", path, "--spec", spec,
                                "--out_dir", out, *ENGINES[engine]])
                print(f"{run['wall']:7.1f} s", flush=True)
                results.append((rows, engine, run))
                shutil.rmtree(out, ignore_errors=True)
        print(f"\n{os.cpu_count()} cores; CSV of {largest:,} rows: "
              f"{os.path.getsize(logs) / 2**30:.2f} GiB\n")
        print(f"{'rows':>12} {'engine':<9}{'wall s':>8}{'rows/s':>10}{'CPU s':>8}"
              f"{'CPU s/M':>9}{'max RSS GB':>12}{'vs rows':>9}")
        wall_of = {(rows, engine): run["wall"] for rows, engine, run in results}
        for rows, engine, run in results:
            rows_wall = wall_of.get((rows, "rows"))
            ratio = f"{rows_wall / run['wall']:.1f}x" if rows_wall and engine != "rows" else ""
            print(f"{rows:>12,} {engine:<9}{run['wall']:>8.1f}{rows / run['wall']:>10,.0f}"
                  f"{run['cpu']:>8.0f}{run['cpu'] / rows * 1e6:>9.1f}{run['rss_gb']:>12.2f}"
                  f"{ratio:>9}")
        return 0
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

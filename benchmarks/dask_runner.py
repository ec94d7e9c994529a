"""The preprocessing pipeline on Beam's DaskRunner against a local dask.distributed cluster.

Starts a `LocalCluster` of `--workers` single-threaded worker processes on 127.0.0.1,
runs `beam.preprocess` with the DaskRunner on it, then with the DirectRunner (2
processes) on the same input, and prints wall seconds, rows/s and each Dask worker's max
RSS (`resource.getrusage` in the worker, after the run):

    python benchmarks/dask_runner.py --input /data/logs.csv --spec /data/spec.json
    python benchmarks/dask_runner.py --input '/data/logs-*.csv' --spec spec.json --workers 4

The DaskRunner of Beam 2.77 reads each input file in one task (its `Reshuffle` does not
redistribute), so a single big file is read by one worker; split big logs into files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def _max_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="raw logs (a glob)")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip_direct", action="store_true")
    args = parser.parse_args(argv)

    import distributed

    from beam import preprocess

    workdir = tempfile.mkdtemp(prefix="tfddn-dask-")
    results = {}
    try:
        with distributed.LocalCluster(n_workers=args.workers, processes=True,
                                      threads_per_worker=1, host="127.0.0.1",
                                      dashboard_address=None) as cluster:
            start = time.perf_counter()
            metadata = preprocess.run_with(
                ["--runner", DASK_RUNNER, "--dask_client_address", cluster.scheduler_address,
                 "--dask_partition_size", "1"],
                input=args.input, output=os.path.join(workdir, "dask"), spec=args.spec)
            results["dask"] = time.perf_counter() - start
            client = distributed.Client(cluster)
            worker_rss = client.run(_max_rss_mib)
            client.close()
            while True:  # the DaskRunner opens a client per run and never closes it
                try:
                    distributed.default_client().close()
                except ValueError:  # none left
                    break
        if not args.skip_direct:
            start = time.perf_counter()
            direct = preprocess.run_with(
                ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
                input=args.input, output=os.path.join(workdir, "direct"), spec=args.spec)
            results["direct, 2 processes"] = time.perf_counter() - start
            same = all(direct[k] == metadata[k] for k in ("rows_read", "examples", "clicks",
                                                          "impressions", "vocabulary_sizes"))
            print(f"same counts, examples and vocabulary sizes as the DirectRunner: {same}")
        rows = metadata["rows_read"]
        print(f"\n{rows:,} rows; Dask: {args.workers} worker processes x 1 thread")
        for label, seconds in results.items():
            print(f"{label:<22}{seconds:>8.1f} s{rows / seconds:>12,.0f} rows/s")
        print("max RSS per Dask worker (MiB):", json.dumps(
            {address.rsplit(":", 1)[-1]: round(mib) for address, mib in worker_rss.items()}))
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

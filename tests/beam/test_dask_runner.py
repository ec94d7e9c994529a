"""The pipeline on Beam's DaskRunner against a local dask.distributed cluster (2 worker
processes on loopback) writes what the DirectRunner writes from the same input.

Compared: the decoded `tf.train.Example`s of every split (as sorted multisets), the
vocabulary files, the dead-letter rows and `metadata.json` less what differs between two
runs by design (`created_at`, `output`, the runner-chosen dead-letter shard names).

What the DaskRunner of Beam 2.77 runs, and what it silently gets wrong (tagged outputs,
`finish_bundle` outputs, Beam file sinks, all leaves but the last), is in docs/SCALE.md;
the batched engine (the default, `beam.batched`) keeps within what it runs, the row
engine (`--engine rows`) does not.
"""

import csv
import json
import random

import distributed  # the `dask` extra, also in `dev`
import pytest
from beam_test_utils import DAY, MARKET_HEADER, MARKET_SPEC, run_outputs

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"  # 2.77 rejects "DaskRunner"
FILES, ROWS_PER_FILE = 4, 120
BAD_ROWS = [  # (target_id, title, age, publisher, history, clicks, impressions, cpc, ts)
    ("t1", "red", "3"),                                         # malformed_row: 3 cells
    ("t1", "red", "3", "p1", "x", "-1", "10", "0.5", "100"),    # negative_count
    ("t1", "red", "3", "p1", "x", "11", "10", "0.5", "100"),    # clicks_exceed_impressions
    ("t1", "red", "3", "p1", "x", "0", "0", "0.5", "100"),      # zero_impressions
    ("t1", "red", "3", "p1", "x", "1", "2.5", "0.5", "100"),    # unparsable_value
]


def _write_logs(folder) -> str:
    """`FILES` seeded CSV files of MARKET_HEADER rows over 3 days, bad rows spread in."""
    rng = random.Random(15)
    words, history = ["red", "blue", "shoe", "hat", "green"], ["x", "y", "z"]
    for index in range(FILES):
        rows = []
        for _ in range(ROWS_PER_FILE):
            impressions = rng.randint(1, 40)
            rows.append((f"t{rng.randint(0, 40)}", " ".join(rng.sample(words, 2)),
                         rng.choice([1.5, 2.0, 3.0]), f"p{rng.randint(0, 6)}",
                         "|".join(rng.sample(history, rng.randint(0, 2))),
                         rng.randint(0, impressions), impressions,
                         round(rng.uniform(0.1, 2.0), 2), rng.randint(0, 3 * DAY - 1)))
        rows.insert(ROWS_PER_FILE // 2, BAD_ROWS[index])
        if index == 0:
            rows.append(BAD_ROWS[-1])
        with open(folder / f"logs-{index}.csv", "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(MARKET_HEADER)
            writer.writerows(rows)
    return str(folder / "logs-*.csv")


@pytest.fixture(scope="module")
def cluster():
    """A dask.distributed cluster of 2 single-threaded worker processes on 127.0.0.1."""
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address=None) as local:
        yield local
        for _ in range(100):  # the DaskRunner opens a client per run and never closes it
            try:
                distributed.default_client().close()
            except ValueError:  # no client left
                break


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask_runner")
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps(MARKET_SPEC))
    return {"root": root, "input": _write_logs(root), "spec": str(spec_path)}


def _run(logs, name, pipeline_args=()):
    from beam import preprocess

    output = str(logs["root"] / name)
    metadata = preprocess.run_with(list(pipeline_args), input=logs["input"], output=output,
                                   spec=logs["spec"], num_shards=2)
    return run_outputs(output, metadata, digits=6)


@pytest.fixture(scope="module")
def direct_outputs(logs):
    return _run(logs, "direct")


@pytest.mark.slow
def test_cluster_runs_a_grouping_pipeline(cluster, tmp_path):
    """The cluster and the DaskRunner work: a cross-process GroupByKey sums right."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    out = tmp_path / "sums.jsonl"

    def _append(kv):  # Beam's file sinks lose their output on this runner
        with open(out, "a") as fh:
            fh.write(json.dumps(kv) + "\n")

    options = PipelineOptions(["--runner", DASK_RUNNER, "--dask_client_address",
                               cluster.scheduler_address, "--dask_partition_size", "50"])
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | "Create" >> beam.Create([(f"k{i % 7}", i) for i in range(700)])
             | "SumPerKey" >> beam.CombinePerKey(sum)
             | "Append" >> beam.Map(_append))
    sums = dict(json.loads(line) for line in out.read_text().splitlines())
    assert sums == {f"k{r}": sum(range(r, 700, 7)) for r in range(7)}
    assert len(cluster.workers) == 2


@pytest.mark.slow
def test_direct_run_has_every_output(direct_outputs):
    """The reference run exercises every output the comparison below checks."""
    assert all(direct_outputs["examples"].values())
    assert {r["reason"] for r in direct_outputs["dead_letter"]} == {
        "malformed_row", "negative_count", "clicks_exceed_impressions", "zero_impressions",
        "unparsable_value"}
    assert direct_outputs["metadata"]["rows_read"] == FILES * ROWS_PER_FILE + len(BAD_ROWS)


@pytest.mark.slow
def test_dask_runner_writes_what_the_direct_runner_writes(cluster, logs, direct_outputs):
    dask_outputs = _run(logs, "dask", ["--runner", DASK_RUNNER, "--dask_client_address",
                                       cluster.scheduler_address, "--dask_partition_size", "1"])
    assert dask_outputs["metadata"] == direct_outputs["metadata"]
    assert dask_outputs["dead_letter"] == direct_outputs["dead_letter"]
    assert dask_outputs["vocabularies"] == direct_outputs["vocabularies"]
    for split in ("train", "validation", "eval"):
        assert dask_outputs["examples"][split] == direct_outputs["examples"][split], split

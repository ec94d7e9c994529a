"""Training examples per second: REG vs MDN vs DDN vs BBDDN, TFRecords vs in-memory tensors.

All four models share the same towers (the default `ModelConfig`); only the head and
loss differ. Each is trained for the same number of steps fed (a) by the
`tfddn.data` TFRecord pipeline and (b) from tensors already in memory. The first
epoch (tracing, warm-up) is not timed.

    python benchmarks/train_throughput.py --data_dir demo_out/preprocessed

Prints examples/s per cell, the step cost of each kind relative to REG, of BBDDN relative
to DDN (issue #10's budget: <= 1.3x) and the TFRecord/in-memory throughput, all measured
side by side in this one run. `--repeats R` interleaves R rounds of the kinds and keeps
each cell's median, so a busy machine disturbs every kind alike.
"""

from __future__ import annotations

import argparse
import sys
import time


def _in_memory(ds, tf):
    batches = list(ds)
    return tf.data.Dataset.from_tensor_slices(
        tf.nest.map_structure(lambda *parts: tf.concat(parts, 0), *batches)
    ).batch(int(batches[0][1].shape[0])).prefetch(tf.data.AUTOTUNE), len(batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="output of `tfddn preprocess`")
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after warm-up)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument("--kinds", default="reg,mdn,ddn,bbddn")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from tfddn import training
    from tfddn.models.config import ModelConfig

    data = training.load_training_data(args.data_dir)
    tfrecords = training.keras_dataset(args.data_dir, data.spec, "train", args.batch_size)
    memory, steps = _in_memory(tfrecords, tf)
    examples = data.metadata["examples"]["train"]
    kinds = args.kinds.split(",")
    timings = {}
    models = {}
    for _ in range(args.repeats):
        for kind in kinds:
            for source, ds in (("tfrecord", tfrecords), ("memory", memory)):
                if (kind, source) not in models:
                    model = training.new_model(data, ModelConfig(kind=kind), seed=0)
                    model.fit(ds, epochs=1, verbose=0)  # trace + warm up
                    models[kind, source] = model
                start = time.perf_counter()
                models[kind, source].fit(ds, epochs=args.epochs, verbose=0)
                rate = examples * args.epochs / (time.perf_counter() - start)
                timings.setdefault((kind, source), []).append(rate)
                print(f"{kind:<5} {source:<9} {rate:>10,.0f} examples/s", flush=True)
    results = {key: float(np.median(rates)) for key, rates in timings.items()}

    print(f"\n{examples:,} train examples, {steps} steps of {args.batch_size} per epoch, "
          f"median of {args.repeats} interleaved round(s)")
    print(f"{'':<7}{'TFRecord':>12}{'in-memory':>12}{'TFRecord/mem':>14}")
    for kind in kinds:
        rec, mem = results[kind, "tfrecord"], results[kind, "memory"]
        print(f"{kind.upper():<7}{rec:>12,.0f}{mem:>12,.0f}{rec / mem:>14.2f}")
    for source in ("tfrecord", "memory"):
        base = results[kinds[0], source]
        costs = ", ".join(f"{k.upper()} {base / results[k, source]:.2f}x" for k in kinds[1:])
        print(f"step cost vs {kinds[0].upper()} ({source}): {costs}")
        if {"ddn", "bbddn"} <= set(kinds):
            print(f"BBDDN / DDN step cost ({source}): "
                  f"{results['ddn', source] / results['bbddn', source]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

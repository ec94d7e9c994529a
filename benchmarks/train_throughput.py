"""Training examples per second: REG vs MDN vs DDN, TFRecords vs in-memory tensors.

All three models share the same towers (the default `ModelConfig`); only the head and
loss differ. Each is trained for the same number of steps fed (a) by the
`tfddn.data` TFRecord pipeline and (b) from tensors already in memory. The first
epoch (tracing, warm-up) is not timed.

    python benchmarks/train_throughput.py --data_dir demo_out/preprocessed

Prints examples/s per cell and the ratios DDN/REG step cost and TFRecord/in-memory
throughput, all measured side by side in this one run.
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
    args = parser.parse_args(argv)

    import tensorflow as tf

    from tfddn import training
    from tfddn.models.config import ModelConfig

    data = training.load_training_data(args.data_dir)
    tfrecords = training.keras_dataset(args.data_dir, data.spec, "train", args.batch_size)
    memory, steps = _in_memory(tfrecords, tf)
    examples = data.metadata["examples"]["train"]
    results = {}
    for kind in ("reg", "mdn", "ddn"):
        for source, ds in (("tfrecord", tfrecords), ("memory", memory)):
            model = training.new_model(data, ModelConfig(kind=kind), seed=0)
            model.fit(ds, epochs=1, verbose=0)  # trace + warm up
            start = time.perf_counter()
            model.fit(ds, epochs=args.epochs, verbose=0)
            results[kind, source] = examples * args.epochs / (time.perf_counter() - start)
            print(f"{kind:<4} {source:<9} {results[kind, source]:>10,.0f} examples/s", flush=True)

    print(f"\n{examples:,} train examples, {steps} steps of {args.batch_size} per epoch")
    print(f"{'':<6}{'TFRecord':>12}{'in-memory':>12}{'TFRecord/mem':>14}")
    for kind in ("reg", "mdn", "ddn"):
        rec, mem = results[kind, "tfrecord"], results[kind, "memory"]
        print(f"{kind.upper():<6}{rec:>12,.0f}{mem:>12,.0f}{rec / mem:>14.2f}")
    for source in ("tfrecord", "memory"):
        reg = results["reg", source]
        print(f"step cost vs REG ({source}): MDN {reg / results['mdn', source]:.2f}x, "
              f"DDN {reg / results['ddn', source]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

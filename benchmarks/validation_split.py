"""Epoch time and the validation share: validation split written at preprocess time vs
the training-time hash filter, side by side on the same logs.

    python benchmarks/validation_split.py [--rows 200000] [--epochs 2] [--out /tmp/vsplit]
    python benchmarks/validation_split.py --data_dir PREP --variants after --epochs 1
        # an epoch on data already preprocessed (e.g. the 10M-row paper-scale set)

Generates one marketplace, preprocesses it twice (`--validation_fraction 0.1`: the split
written by Beam; `--validation_fraction 0`: the old way, where every epoch reads the
whole train split twice, once filtered to "fit" and once to "validation"), trains the same
DDN on each and prints, per epoch, the wall time of the epoch and of its validation pass
(Keras' `on_test_begin` / `on_test_end` inside `fit`), with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import keras


class _Timer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.validation = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._test = time.perf_counter()

    def on_test_end(self, logs=None):
        self.validation.append(time.perf_counter() - self._test)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self._epoch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="/tmp/validation_split_bench")
    parser.add_argument("--data_dir", default=None,
                        help="train on this preprocessed data (with a validation split) "
                             "instead of generating and preprocessing")
    parser.add_argument("--variants", default="before,after",
                        help="before (training-time filter), after (written split)")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")

    from tfddn import console

    console.quiet_libraries()  # before anything imports TensorFlow
    from beam.preprocess import run_with
    from tfddn.configs import TrainConfig
    from tfddn.generate import GenerateConfig, generate
    from tfddn.models.config import ModelConfig
    from tfddn.training import train

    if args.data_dir is None:
        logs = generate(GenerateConfig(out_dir=os.path.join(args.out, "logs"),
                                       rows=args.rows), progress=False)
    results = {}
    for name, fraction in (("training-time filter (before)", 0.0),
                           ("written split (after)", 0.1)):
        if name.split("(")[1].rstrip(")") not in variants:
            continue
        if args.data_dir is not None:
            if fraction == 0.0:
                raise SystemExit("--data_dir holds one preprocessing; use --variants after")
            data_dir = args.data_dir
            with open(os.path.join(data_dir, "metadata.json")) as fh:
                metadata = json.load(fh)
        else:
            data_dir = os.path.join(args.out, f"data_{fraction}")
            metadata = run_with(input=logs.logs_path, spec=logs.spec_path, output=data_dir,
                                overwrite=True, validation_fraction=fraction)
        timer = _Timer()
        train(TrainConfig(data_dir=data_dir, run_dir=os.path.join(args.out, f"run_{fraction}"),
                          epochs=args.epochs, patience=args.epochs, verbose=0, restart=True),
              ModelConfig(kind="ddn"), callbacks=(timer,))
        epoch, validation = (statistics.median(v) for v in (timer.epochs, timer.validation))
        results[name] = (epoch, validation, metadata["examples"])
        print(f"{name}: median epoch {epoch:.1f} s, validation {validation:.1f} s "
              f"({validation / epoch:.0%}); examples {metadata['examples']}", flush=True)
    if len(results) < 2:
        return 0
    (before, after) = results.values()
    print(f"\nepoch time after / before: {after[0] / before[0]:.2f}; validation share "
          f"{before[1] / before[0]:.0%} -> {after[1] / after[0]:.0%}; validation pass "
          f"after / before: {after[1] / before[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

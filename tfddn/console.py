"""A quiet start for every command: no TensorFlow banner, CUDA probe or library chatter.

Importing TensorFlow prints, through C++ logging that no Python setting reaches before
`absl::InitializeLog()`, the oneDNN note, the CPU-instruction note and (without a GPU)
`failed call to cuInit` -- twice, once per shared library. `quiet_libraries()` imports
TensorFlow and probes its devices with the process's stderr captured, and writes back
every captured line except those known start-up notes, so a real error (or a GPU's
device lines, e.g. a driver mismatch) still shows. It also raises the threshold of
TensorFlow's, absl's and Beam's Python loggers to WARNING and hides the deprecation
warnings of third-party libraries.

`--verbose` on any `tfddn` command line, or `TFDDN_VERBOSE=1`, keeps everything.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings

__all__ = ["VERBOSE_ENV", "VERBOSE_FLAG", "quiet_libraries", "verbose_requested"]

VERBOSE_FLAG = "--verbose"
VERBOSE_ENV = "TFDDN_VERBOSE"

_START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|port\.cc:\d+\] oneDNN custom operations|"
    r"cudart_stub\.cc|cpu_feature_guard\.cc|To enable the following instructions|"
    r"cuda_platform\.cc:\d+\] failed call to cuInit|cuda_executor\.cc.*cuInit|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc|"
    r"TF-TRT Warning: Could not find TensorRT")
_LIBRARIES = r"(keras|keras_tuner|tensorflow|tensorflow_probability|tf_keras|apache_beam|" \
             r"google|absl|grpc|pyarrow|dask)"
_done = False


def verbose_requested(argv=()) -> bool:
    return VERBOSE_FLAG in argv or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_libraries() -> None:
    """Imports TensorFlow without its start-up notes (module docstring); idempotent."""
    global _done
    if _done:
        return
    _done = True
    quiet_logs()
    if "tensorflow" in sys.modules:
        return
    _capture_stderr(_import_tensorflow)


def quiet_logs() -> None:
    """Library warnings and start-up log notes off, without importing TensorFlow (for
    commands that do not use it, e.g. `tfddn preprocess`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING after start-up
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=_LIBRARIES)
    warnings.filterwarnings("ignore", category=FutureWarning, module=_LIBRARIES)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(keras|tensorflow)\.")
    for name in ("tensorflow", "absl", "apache_beam", "keras_tuner"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger().addFilter(_known_notes)


def _known_notes(record: logging.LogRecord) -> bool:
    """Drops Beam's import-time note about the optional Google Cloud clients."""
    return not str(record.msg).startswith("apitools not found")


def _import_tensorflow() -> None:
    import tensorflow as tf

    tf.config.list_physical_devices()  # the CUDA probe, inside the capture
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:  # absl comes with TensorFlow; be safe anyway
        pass


def _capture_stderr(fn) -> None:
    """Runs `fn` with file descriptor 2 (C++ logging's stderr) sent to a temporary file,
    then writes back the lines that are not start-up notes (also when `fn` raises)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            fn()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode("utf-8", errors="replace").splitlines():
                if line.strip() and not _START_UP_NOISE.search(line):
                    print(line, file=sys.stderr)

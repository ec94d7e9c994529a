"""User errors vs bugs, for every command line of tfddn.

A user error (a bad flag value, spec, input file or output folder) is reported as
one line, `tfddn: error: ...`, with exit status 2; a bug keeps its traceback.
`--debug` anywhere on a command line shows the traceback of a user error too.

Library code raises the standard exceptions with a message that says what is wrong
and how to fix it: `ValueError` (and subclasses such as `SpecError`) for bad
values, `FileNotFoundError` / `FileExistsError` / `PermissionError` for paths;
`UserError` where none fits.
"""

from __future__ import annotations

import sys
import urllib.error
from typing import Callable, Sequence

__all__ = ["DEBUG_FLAG", "UserError", "is_user_error", "run_main"]

DEBUG_FLAG = "--debug"
_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
              PermissionError, ConnectionError, TimeoutError, urllib.error.URLError)
# TensorFlow errors that mean a missing or unreadable file, never a bug in the code.
_TF_FILE_ERRORS = ("NotFoundError", "PermissionDeniedError", "DataLossError")


class UserError(ValueError):
    """A mistake in what the user asked for, with a message saying how to fix it."""


def is_user_error(error: BaseException) -> bool:
    if isinstance(error, (ValueError, *_OS_ERRORS)):
        return True
    return (type(error).__module__.startswith("tensorflow")
            and type(error).__name__ in _TF_FILE_ERRORS)


def _one_line(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and error.strerror is not None:
        message = f"{error.filename}: {error.strerror}"
    elif isinstance(error, urllib.error.URLError) and not isinstance(error,
                                                                     urllib.error.HTTPError):
        message = f"cannot reach the server: {error.reason}"
    return " ".join(message.split())


def run_main(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None,
             prog: str = "tfddn") -> int:
    """Runs `main(argv)`, printing a user error as one line (exit 2) unless `--debug`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - sorted into user errors and bugs below
        if debug or not is_user_error(error):
            raise
        print(f"{prog}: error: {_one_line(error)} (run with {DEBUG_FLAG} for the traceback)",
              file=sys.stderr)
        return 2

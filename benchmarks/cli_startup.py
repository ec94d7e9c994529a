"""Start-up time of `tfddn` help screens, this tree vs an earlier revision, side by side.

    python benchmarks/cli_startup.py [--baseline b66afe0] [--repeats 3]

Each command runs as a fresh process (`python -m tfddn.cli ...`) with `PYTHONPATH` set to
this tree or to a `git worktree` of the baseline revision, alternating, and the median
wall time is printed with the ratio. It also reports whether TensorFlow was imported
and how many lines went to stderr (the TensorFlow banner).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = (["--help"], ["train", "--help"], ["simulate", "--help"], ["explain", "sample",
                                                                      "--help"])
_PROBE = ("import runpy, sys; sys.argv = ['tfddn', *sys.argv[1:]]\n"
          "try:\n    runpy.run_module('tfddn.cli', run_name='__main__')\n"
          "except SystemExit:\n    pass\n"
          "print('TF' if 'tensorflow' in sys.modules else 'no TF', file=sys.stderr)")


def _run(tree: str, argv: list[str]) -> tuple[float, bool, int]:
    env = {**os.environ, "PYTHONPATH": tree}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], env=env, cwd=tree,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    return seconds, lines[-1:] == ["TF"], len(lines) - 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="b66afe0", help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "baseline")
        subprocess.run(["git", "worktree", "add", "--detach", base, args.baseline], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            print(f"{'command':<28}{'baseline s':>11}{'now s':>8}{'speed-up':>10}"
                  f"{'TF then/now':>14}{'stderr lines then/now':>24}")
            for command in COMMANDS:
                runs = {"base": [], "now": []}
                for _ in range(args.repeats):  # alternate, so load affects both alike
                    runs["base"].append(_run(base, command))
                    runs["now"].append(_run(ROOT, command))
                t = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
                tf = "/".join("yes" if v[-1][1] else "no" for v in runs.values())
                noise = "/".join(str(v[-1][2]) for v in runs.values())
                print(f"{' '.join(command):<28}{t['base']:>11.2f}{t['now']:>8.2f}"
                      f"{t['base'] / t['now']:>9.1f}x{tf:>14}{noise:>24}")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", base], cwd=ROOT,
                           capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

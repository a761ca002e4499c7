"""The `spikewire` command (and `python -m spikewire`): launch's command line plus the layers above it."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from spikewire.bench.cli import pass_through, register
    from spikewire.launch.cli import main as launch_main

    argv = sys.argv[1:] if argv is None else argv
    try:
        code = pass_through(argv)
        code = launch_main(argv, extensions=(register,)) if code is None else code
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except BrokenPipeError:
        # The reader went away (`spikewire check big.toml | head`): what was left to print is not wanted. Point
        # stdout at /dev/null so that Python's own flush at exit does not raise again, and exit as `head`
        # expects a writer to (no traceback).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a writer killed by it


if __name__ == "__main__":
    sys.exit(main())

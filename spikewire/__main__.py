"""The `spikewire` command (and `python -m spikewire`): launch's command line plus the layers above it."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from spikewire.bench.cli import pass_through, register
    from spikewire.launch.cli import main as launch_main

    argv = sys.argv[1:] if argv is None else argv
    code = pass_through(argv)
    return launch_main(argv, extensions=(register,)) if code is None else code


if __name__ == "__main__":
    sys.exit(main())

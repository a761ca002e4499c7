"""``python -m spikewire.tools.fault_proxy``: the same as ``spikewire fault-proxy``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

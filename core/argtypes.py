"""Value types for the command lines (``spikewire``, ``top``, ``rig-sim``, ``fault-proxy``): a number in
a range, refused with one line that says what was expected."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def number(cast: Callable[[str], float] = float, *, above: float | None = None, at_least: float | None = None,
           at_most: float | None = None, name: str = "") -> Callable[[str], float]:
    """An argparse ``type`` that parses with ``cast`` and accepts only finite values with
    ``value > above``, ``value >= at_least`` and ``value <= at_most`` (each bound optional). ``name``
    says what the value is in the messages ("a number of seconds", "a probability")."""
    what = f"{name} " if name else ""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {name or 'a number'}") from None
        ok = math.isfinite(value) and (above is None or value > above) and (
            at_least is None or value >= at_least) and (at_most is None or value <= at_most)
        if ok:
            return value
        if at_least is not None and at_most is not None:
            bound = f"in [{at_least:g}, {at_most:g}]"
        elif above is not None:
            bound = f"> {above:g}"
        elif at_least is not None:
            bound = f">= {at_least:g}"
        elif at_most is not None:
            bound = f"<= {at_most:g}"
        else:
            bound = "finite"
        raise argparse.ArgumentTypeError(f"must be {what}{bound}, got {text}")

    return parse


def output_file(text: str) -> str:
    """An argparse ``type`` for a file a command will write (``--json PATH``, ``--out FILE``): refused at once,
    before any work, when its folder does not exist or cannot be written, or when it names a folder."""
    import os
    from pathlib import Path

    path = Path(text).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: no folder {str(folder)!r}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: the folder {str(folder)!r} is not writable")
    return str(path)

"""Finding free loopback ports for runs that must not collide (tests, benchmarks, parallel sessions)."""

from __future__ import annotations

import random
import socket


def free_port_block(count: int, lo: int = 20000, hi: int = 32000) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1. They are taken from below the
    ephemeral range, so outgoing connections do not grab them before the nodes bind them a moment later."""
    for _ in range(200):
        base = random.randrange(lo, hi - count)
        held = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"found no {count} consecutive free ports in {lo}-{hi}")

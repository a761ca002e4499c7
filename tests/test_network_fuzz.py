"""Fuzzing the network loader: random mutations of the shipped network files must load or be refused with
``NetworkError`` (one printable line), never raise anything else, allocate gigabytes or hang.

Two mutators, each seeded and bounded in count and time:

* structural: the parsed TOML with one to three edits (a value replaced by a hostile one from ``VALUES``, a
  key deleted, a key added, a table key renamed, a node duplicated) through ``build_network``;
* textual: the file's bytes with a few flipped, inserted, deleted or duplicated through ``load_network``.

The loop runs in a child process with a capped address space, so a size that slips past validation and
allocates shows up as a MemoryError here instead of swapping a shared machine.
"""

from __future__ import annotations

import copy
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

NETWORKS = Path(__file__).resolve().parent.parent / "launch" / "networks"
MEMORY = 3 << 30
SEED = 20261207
STRUCTURAL = 1500
TEXTUAL = 600
TIME_BUDGET = 20.0  # seconds for all of it; the loop stops early rather than overrun
SLOW_CASE = 2.0  # one load taking longer than this is a failure: something sized itself on the input

VALUES = [
    0, -1, 1, 2, 7, 65535, 65536, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, -(2**63) - 1, 2**64 + 5, 10**9, 10**18,
    0.0, -0.0, 1e-300, 5e-324, 1e300, -1e300, 1.7976931348623157e308, float("inf"), float("-inf"), float("nan"),
    True, False, "", "x", "0", "1e9", "../../../elsewhere", "/etc/passwd", "a\nb", "\x00", "\x1b[2J", "ü" * 3,
    "*", "0.0.0.0", "::1", "localhost", "tcp://:0", "tcp://*:1", "tcp://127.0.0.1:0", "inproc://x", "ipc://",
    "x" * 5000, "auto", "synaptic", "stimulus", "silicon", "memristor", "biological", "sink", "source", "rig",
    [], [[]], [0], [1, 2, 3], [-1], [[0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]], [[10**9, 0, 0, 0]],
    [[-5, 0, 0, 0]], [[0, 0]], [1.5, "x"], [[0, 10.0], [-1, 2.0]], [["a", 1]], [{"name": "p", "duration": 1e308}] * 2,
    {}, {"a": 1}, {"kind": "pacemaker", "rate": 1e300}, {"size": 10**12}, {"x": {"y": {"z": 1}}},
]
NAMES = ["", "x", "a.b", "../up", "a b", "a\nb", "x" * 100, "ü", "9lives", "-dash", "_ok", "mr1", "anpre",
         "zurich", "kind", "size", "table", "rows", "populations", "synapses", "bind", "state_file"]


def _paths(node, prefix=()):
    """Every (path, value) in a parsed TOML document: dict keys and list indices."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _parent(doc, path):
    for part in path[:-1]:
        doc = doc[part]
    return doc


def mutate(doc: dict, rng: random.Random) -> dict:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p, _ in _paths(doc) if p]
        path = rng.choice(paths)
        parent = _parent(doc, path)
        op = rng.random()
        if op < 0.55:
            parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
        elif op < 0.7:
            del parent[path[-1]]
        elif op < 0.8 and isinstance(parent, dict):
            parent[rng.choice(NAMES)] = copy.deepcopy(rng.choice(VALUES))
        elif op < 0.92 and isinstance(parent, dict):
            parent[rng.choice(NAMES)] = parent.pop(path[-1])  # rename: populations, synapses, sites, nodes
        elif "nodes" in doc and isinstance(doc["nodes"], dict) and doc["nodes"]:
            name = rng.choice(list(doc["nodes"]))
            doc["nodes"][rng.choice(NAMES)] = copy.deepcopy(doc["nodes"][name])
    return doc


def mutate_text(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(b))
        op = rng.random()
        if op < 0.3:
            b[i] = rng.randrange(256)
        elif op < 0.55:
            b[i:i] = rng.choice([b"[", b"]", b"{", b"}", b'"', b"=", b"\n", b".", b",", b"9" * 30, b"\xff", b"\x00",
                                 b"[[links]]\n", b"[nodes.x]\n", b"e999", b"-", b"'"])
        elif op < 0.8:
            del b[i:i + rng.randint(1, 20)]
        else:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randint(1, 80)]
    return bytes(b)


def fuzz(seed: int = SEED, structural: int = STRUCTURAL, textual: int = TEXTUAL, budget: float = TIME_BUDGET) -> dict:
    """Run the fuzz loop; returns {"cases": n, "failures": [...]}, each failure a short description."""
    import tomllib

    from spikewire.config.network import NetworkError, build_network, load_network

    rng = random.Random(seed)
    files = sorted(NETWORKS.glob("*.toml"))
    docs = [(f, tomllib.loads(f.read_text())) for f in files]
    failures, cases = [], 0
    deadline = time.monotonic() + budget
    work = Path(tempfile.mkdtemp(prefix="spikewire-fuzz-"))

    def attempt(describe, load):
        nonlocal cases
        cases += 1
        t0 = time.monotonic()
        try:
            load()
        except NetworkError as e:
            if not str(e).isprintable() or len(str(e)) > 1000:
                failures.append(f"{describe()}: message not one short printable line: {str(e)[:200]!r}")
        except BaseException as e:  # noqa: BLE001 -- the point: anything but NetworkError is a finding
            if isinstance(e, KeyboardInterrupt):
                raise
            where = traceback.extract_tb(e.__traceback__)[-1]
            failures.append(f"{describe()}: {type(e).__name__}: {str(e)[:200]} "
                            f"at {Path(where.filename).name}:{where.lineno}")
        elapsed = time.monotonic() - t0
        if elapsed > SLOW_CASE:
            failures.append(f"{describe()}: took {elapsed:.1f} s")

    for i in range(structural):
        if time.monotonic() > deadline:
            break
        f, doc = docs[i % len(docs)]
        mutated = mutate(doc, rng)
        attempt(lambda: f"{f.name} structural #{i}: {json.dumps(mutated, default=repr)[:600]}",
                lambda: build_network(mutated, default_name=f.stem, path=work / f.name, check_keys=False))
    for i in range(textual):
        if time.monotonic() > deadline:
            break
        f = files[i % len(files)]
        data = mutate_text(f.read_bytes(), rng)
        path = work / f"t{i % 8}.toml"
        path.write_bytes(data)
        attempt(lambda: f"{f.name} textual #{i}: {data[:0]!r}{len(data)} bytes",
                lambda: load_network(path, check_keys=False))
    return {"cases": cases, "failures": failures}


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def test_fuzzed_network_files_load_or_are_refused():
    code = ("import json, sys\n"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from test_network_fuzz import fuzz\n"
            "print(json.dumps(fuzz()))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIME_BUDGET + 60, preexec_fn=_limit)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cases"] >= 500, result["cases"]  # the budget must not starve the loop
    failures = result["failures"]
    assert not failures, f"{len(failures)} of {result['cases']} cases:\n" + "\n".join(failures[:30])

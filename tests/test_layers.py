"""The layers of DESIGN.md hold: import-linter's contracts (pyproject.toml) pass on the package as it
installs, and a back-up import (a lower layer importing a higher one) breaks them.

The editable install maps the top-level folders onto ``spikewire.*`` through an import hook that grimp
cannot walk, so the test lays the package out as a wheel would (``spikewire/<layer>/``) in a temporary
folder and lints that copy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def _layout(dest: Path) -> Path:
    """Copy the package as it installs (tool.setuptools.package-dir) under ``dest``; return its root."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):
        target = dest.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for src in (ROOT / folder).glob("*.py"):
            shutil.copy2(src, target / src.name)
    return dest


def _lint(root: Path) -> subprocess.CompletedProcess:
    # Run from the copy (lint-imports puts the working folder first on sys.path) with the repo's contracts.
    return subprocess.run([str(LINT), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=root, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    if not LINT.exists():
        pytest.fail(f"{LINT} missing: `make test` installs import-linter (the [test] extra)")
    return _layout(tmp_path_factory.mktemp("layers"))


def test_lint_imports_from_the_repository_root_sees_the_whole_package():
    """As a developer runs it: `lint-imports` in the repository (spikewire/'s symlinks to the layer
    folders make the package it finds there the whole one)."""
    r = subprocess.run([str(LINT), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Contracts: 2 kept, 0 broken." in r.stdout, r.stdout + r.stderr
    analysed = int(re.search(r"Analyzed (\d+) files", r.stdout).group(1))
    assert analysed > 60, r.stdout  # every layer, not spikewire/__init__.py alone


def test_the_import_contracts_hold(layout):
    r = _lint(layout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 2 kept, 0 broken." in r.stdout
    assert "Analyzed" in r.stdout


@pytest.mark.parametrize("module, backup", [
    ("core/histogram.py", "spikewire.config.network"),       # core reaching up into config
    ("streams/wire.py", "spikewire.nodes.base"),             # streams importing an element
    ("nodes/runtime.py", "spikewire.monitor.exporter"),      # the loop importing the monitor
    ("monitor/report.py", "spikewire.launch.supervisor"),    # a reader importing the launcher
    ("tools/rig_sim.py", "spikewire.config.network"),        # an instrument reading the network file
])
def test_a_back_up_import_breaks_the_build(tmp_path, module, backup):
    root = _layout(tmp_path)
    path = root / "spikewire" / module
    path.write_text(path.read_text() + f"\n\nimport {backup}  # a deliberate back-up import\n")
    r = _lint(root)
    assert r.returncode != 0, r.stdout
    importer = "spikewire." + module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {backup}" in r.stdout, r.stdout


KIND_NAMES = re.compile(r'"(silicon|memristor|biological)"')


def test_no_consumer_names_an_element_kind():
    """Monitoring, reports and the network/session readers work from declarations and figures: a kind
    added by a package appears in all of them, so none may name a built-in kind (issue 12)."""
    hits = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
            for folder in ("monitor", "config") for path in sorted((ROOT / folder).rglob("*.py"))
            for i, line in enumerate(path.read_text().splitlines(), 1) if KIND_NAMES.search(line)]
    assert not hits, "\n".join(hits)

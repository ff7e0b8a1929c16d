"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and no module of gateway/ escapes them.

The contracts are checked by `lint-imports` in a subprocess (import-linter configures logging for the whole
process it runs in, which would silence the gateway's loggers for the tests after this one). A new top-level
module or package of gateway/ must be given its place in the layers contract, or it is outside the layering.
"""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import gateway

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
# `lint-imports` is the console script of this function (import-linter's entry point).
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _contracts() -> list[dict]:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]


def _layered_modules() -> set[str]:
    """Every module the layers contract names (a layer may list several, independent `:` or not `|`)."""
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    named = set()
    for layer in layers["layers"]:
        for name in re.split(r"[:|]", layer):
            named.add(name.strip().strip("()"))  # "(name)": an optional layer
    return named


@pytest.mark.slow  # a subprocess (lint-imports reconfigures logging process-wide); .ci/run also runs it
def test_the_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--config", str(PYPROJECT), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"import-linter: a contract is broken\n{result.stdout}{result.stderr}"
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in result.stdout, result.stdout


def test_every_top_level_module_of_gateway_is_in_the_layers_contract() -> None:
    modules = {f"gateway.{m.name}" for m in pkgutil.iter_modules(gateway.__path__)}
    assert modules, "no modules found in gateway/"
    missing = sorted(modules - _layered_modules())
    assert not missing, (
        f"{', '.join(missing)}: not in the layers contract of pyproject.toml ([[tool.importlinter.contracts]], "
        "type = 'layers'); give each its layer"
    )

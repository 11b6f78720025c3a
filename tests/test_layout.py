"""The package layout: `assistant` and `synth` share code only through neutral modules, never each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APART = ("anomaly_vlm.assistant", "anomaly_vlm.synth")


def imported_modules(source: str, package: str) -> set[str]:
    """Every module an import statement anywhere in `source` (functions included) may load, made absolute.

    `package` is the package relative imports resolve against; `from X import y` counts
    as both X and X.y, since y may be a submodule.
    """
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] if node.level else [])
            module = ".".join(p for p in (base, node.module) if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("source", [
    "from ..synth.simulators import simulate",
    "from .. import synth",
    "import anomaly_vlm.synth.runner",
    "from anomaly_vlm import synth",
    "def later():\n    from ..synth import recipe",
])
def test_imported_modules_sees_every_form(source):
    assert any(_within(n, "anomaly_vlm.synth") for n in imported_modules(source, "anomaly_vlm.assistant"))


@pytest.mark.parametrize("package,other", [APART, APART[::-1]])
def test_assistant_and_synth_do_not_import_each_other(package, other):
    folder = ROOT.joinpath(*package.split("."))
    modules = sorted(folder.rglob("*.py"))
    assert modules, f"no modules found in {folder}"
    offenders = {}
    for path in modules:
        here = ".".join(path.relative_to(ROOT).parent.parts)
        found = sorted(n for n in imported_modules(path.read_text(encoding="utf-8"), here) if _within(n, other))
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert not offenders, f"{package} imports {other}"

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


def test_every_subpackage_ships_and_no_module_grows_past_400_lines():
    import tomllib

    shipped = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "anomaly_vlm").rglob("__init__.py")}
    assert packages <= shipped, f"not in pyproject's packages: {sorted(packages - shipped)}"
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "anomaly_vlm").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"one concept per module: {long}"


def test_one_region_reads_the_same_in_the_terminal_the_app_and_the_report(capsys):
    from anomaly_vlm.cli.inspect import print_inspection
    from anomaly_vlm.proposals import make_region
    from anomaly_vlm.report.context import region_cells
    from anomaly_vlm.types import Inspection
    from anomaly_vlm.ui import findings_rows

    region = make_region((10, 20, 40, 50), 100, 80, 612.0, peak=0.9134, mean=0.6071)
    inspection = Inspection("part", 0.91, 0.5, [region], {"mode": "reference", "features": "builtin"}, (100, 80),
                            review_threshold=0.4)
    app_row = findings_rows(inspection)[0]
    report_row = region_cells({"regions": [region.to_dict()]}, region.to_dict())
    assert app_row[1:-1] == report_row == ["left", "10, 20, 40, 50", "7.65", "0.91", "0.61"]
    print_inspection(inspection)
    assert "region 1: left, box [10, 20, 40, 50], 7.65% of the image, peak 0.91, mean 0.61" in capsys.readouterr().out

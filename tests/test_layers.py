"""The packages stack in layers (docs/ARCHITECTURE.md): each imports only packages of lower layers.

Read from the source with `ast`, so an import hidden inside a function counts as much as one at the
top of a module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Bottom to top. Packages on one layer are siblings: they do not import each other.
LAYERS = (
    ("foundation",),
    ("datamodules", "ampmodel"),
    ("training",),
    ("studies",),
    ("ampstudy",),
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}
# ampmodel is pure torch (its model code is shipped with registered models): the standard library and torch only.
AMPMODEL_THIRD_PARTY = {"torch"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute top-level module name) of every import in a file; relative imports stay in the package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def package_files(package: str) -> list[Path]:
    files = sorted((REPO / package).glob("*.py"))
    assert files, f"package {package} has no modules"
    return files


@pytest.mark.parametrize("package", list(LAYER_OF))
def test_no_package_imports_its_own_layer_or_above(package):
    level = LAYER_OF[package]
    wrong = [f"{path.relative_to(REPO)}:{line} imports {module} (layer {LAYER_OF[module]})"
             for path in package_files(package) for line, module in imported_modules(path)
             if module in LAYER_OF and module != package and LAYER_OF[module] >= level]
    assert not wrong, f"{package} (layer {level}) may only import lower layers:\n" + "\n".join(wrong)


def test_ampmodel_imports_only_the_standard_library_and_torch():
    allowed = set(sys.stdlib_module_names) | AMPMODEL_THIRD_PARTY | {"__future__"}
    wrong = [f"{path.relative_to(REPO)}:{line} imports {module}" for path in package_files("ampmodel")
             for line, module in imported_modules(path) if module not in allowed]
    assert not wrong, "ampmodel must stay pure torch:\n" + "\n".join(wrong)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from studies.runner import run_study\n    from . import sibling\n")
    assert imported_modules(source) == [(1, "os"), (4, "studies")]


def test_every_package_is_placed_on_a_layer():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages == set(LAYER_OF), "add new packages to LAYERS here and in docs/ARCHITECTURE.md"


def test_the_registered_model_code_imports_only_what_travels_with_it():
    """MLflow runs training/amp_pyfunc_model.py where ampstudy is not installed (training/mlflow_model.py)."""
    from training.mlflow_model import MODEL_CODE, SHIPPED_PACKAGE

    allowed = set(sys.stdlib_module_names) | {"__future__", "mlflow", "numpy", "torch"}
    wrong = [f"line {line} imports {module}" for line, module in imported_modules(MODEL_CODE) if module not in allowed]
    assert not wrong, f"{MODEL_CODE.name} must run without ampstudy:\n" + "\n".join(wrong)
    assert SHIPPED_PACKAGE not in LAYER_OF

"""The layering and the public surface, checked from the source."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import labelstitch

PACKAGE = Path(labelstitch.__file__).parent
CORE = ["geometry", "contingency", "relabel", "matching", "resolve", "stitching", "metrics", "synthetic", "testing", "rag", "watershed"]
ALLOWED_THIRD_PARTY = {"numpy", "numba", "scipy"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def test_core_imports_only_numpy_numba_scipy_and_the_core():
    import sys

    stdlib = set(sys.stdlib_module_names)
    for name in CORE:
        path = PACKAGE / f"{name}.py"
        for imp in imports_of(path if path.exists() else PACKAGE / name / "__init__.py"):
            top = imp.lstrip(".").split(".")[0]
            if imp.startswith("."):
                assert top in CORE or top.startswith("_"), f"{name}.py imports {imp}"
                assert top not in {"_cli", "executors", "plugins", "stores", "workflow", "demo"}, f"{name}.py imports {imp}"
            else:
                assert top in stdlib or top in ALLOWED_THIRD_PARTY or top == "__future__", f"{name}.py imports {imp}"


def test_the_dvid_test_server_shares_no_code_with_the_client():
    """So the client is tested against the API reference, not against its own assumptions."""
    for imp in imports_of(PACKAGE / "testing" / "dvid.py"):
        assert not imp.startswith(".") and not imp.startswith("labelstitch"), f"testing/dvid.py imports {imp}"


def test_kernels_import_nothing_from_the_package():
    for path in (PACKAGE / "_kernels").glob("*.py"):
        for imp in imports_of(path):
            assert not imp.startswith("..") and not imp.startswith("labelstitch"), f"{path.name} imports {imp}"


def test_public_names_are_importable_and_documented():
    assert len(set(labelstitch.__all__)) == len(labelstitch.__all__)
    for name in labelstitch.__all__:
        obj = getattr(labelstitch, name)
        if name.startswith("__"):
            continue
        assert inspect.getdoc(obj), f"labelstitch.{name} has no docstring"
    public = {n for n in dir(labelstitch) if not n.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(labelstitch, n))}
    assert public - modules <= set(labelstitch.__all__), public - modules - set(labelstitch.__all__)


def test_readme_lists_every_public_function():
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    for name in labelstitch.__all__:
        obj = getattr(labelstitch, name)
        if inspect.isfunction(obj):
            assert f"`{name}(" in readme, f"README does not list {name}"


def test_middle_layers_never_import_the_workflow_or_the_cli():
    for layer in ("stores", "executors", "plugins"):
        for path in (PACKAGE / layer).glob("*.py"):
            for imp in imports_of(path):
                top = imp.lstrip(".").split(".")[0]
                assert top not in {"workflow", "_cli", "demo"}, f"{layer}/{path.name} imports {imp}"

"""The layering and the public surface, checked from the source.

Dependencies point one way (docs/architecture.md):
``_cli → api → pipeline → (executors, stores, plugins, checkpoints, report) → core → _kernels``.
Every module of the package is given a layer; every import inside the package, including
those inside functions and under ``TYPE_CHECKING``, must point to the same or a lower
layer, and the import graph must have no cycle (so no lazy import can be hiding one).
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from pathlib import Path

import labelstitch

PACKAGE = Path(labelstitch.__file__).parent

#: layer of every module, by its path's first component (a module or a subpackage)
LAYERS = {
    "_kernels": 0,
    **dict.fromkeys(
        ["_processes", "_threads", "_validation", "_version", "across", "agglomeration", "contacts", "graphparts", "meshing", "skeletons", "codec", "contingency", "geometry", "parameters",
         "matching", "metrics", "rag", "relabel", "resolve", "rules", "stitching", "synthetic", "watershed", "pyramid", "seams", "multicut"], 1),
    "testing": 2,
    **dict.fromkeys(["executors", "stores", "plugins", "hookspecs", "checkpoints", "locks", "report", "figures", "runstatus"], 3),
    "pipeline": 4,
    **dict.fromkeys(["api", "demo", "view"], 5),
    "_cli": 6,
    "__init__": 7,
}
NAMES = {0: "_kernels", 1: "core", 2: "testing", 3: "executors/stores/plugins/checkpoints/report", 4: "pipeline", 5: "api",
         6: "cli", 7: "package root"}
CORE_THIRD_PARTY = {"numpy", "numba", "scipy", "lz4", "crackle", "zmesh", "kimimaro", "osteoid"}


def modules() -> dict[str, Path]:
    """``{"stores._dvid": path, "stores": path of stores/__init__.py, ...}``."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def package_imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if module != "__init__" else []
    base_parts = here if is_package else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base_parts[: len(base_parts) - (node.level - 1)] if node.level > 1 else list(base_parts)
                target = ".".join(parts + ([node.module] if node.module else []))
            elif (node.module or "").startswith("labelstitch"):
                target = node.module.removeprefix("labelstitch").lstrip(".")
            else:
                continue
            candidates = [f"{target}.{alias.name}".lstrip(".") for alias in node.names]
            subs = [c for c in candidates if c in known]
            targets = subs if subs and len(subs) == len(candidates) else [target or "__init__"]
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("labelstitch").lstrip(".") or "__init__" for a in node.names if a.name.startswith("labelstitch")]
        for target in targets:
            while target and target not in known and target != "__init__":
                target = target.rpartition(".")[0]
            out.add(target or "__init__")
    out.discard(module)
    return out


def test_every_module_has_a_layer():
    for module in modules():
        assert module.split(".")[0] in LAYERS, f"{module} has no layer in tests/test_architecture.py and docs/architecture.md"


def test_imports_point_down_or_across_never_up():
    known = modules()
    for module, path in known.items():
        for target in package_imports(module, path, known):
            assert layer(target) <= layer(module), (
                f"{module} ({NAMES[layer(module)]}) imports {target} ({NAMES[layer(target)]}): an upward import"
            )


def test_the_import_graph_has_no_cycle():
    known = modules()
    graph = {m: package_imports(m, p, known) for m, p in known.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " → ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail else nxt)
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_cli_goes_through_the_api():
    known = modules()
    cli = {module for module in known if module.startswith("_cli.")}
    assert {"_cli.main", "_cli.process", "_cli.common", "_cli.scores"} <= cli
    for module in cli:
        assert package_imports(module, known[module], known) <= {"api", "_version", "demo", "view"} | cli
    assert package_imports("demo", known["demo"], known) <= {"api", "geometry", "metrics", "stores", "synthetic", "view"}


def test_core_imports_only_numpy_numba_scipy_lz4_crackle_and_the_core():
    stdlib = set(sys.stdlib_module_names)
    known = modules()
    for module, path in known.items():
        if layer(module) != 1:  # the core (the testing helpers above it may import more)
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in stdlib or top in CORE_THIRD_PARTY or top == "__future__", f"{module} imports {name}"


def test_nothing_outside_stores_knows_a_volume_scheme():
    """Volume strings are parsed by the store registry alone: no other module (the config
    included) names a scheme or takes a volume string apart."""
    splitting = re.compile(r"""\.r?partition\(["']:|\.split\(["'][?:]|["']://["']\s+in\b|["']\.zarr["']\s+in\b|"""
                           r"""endswith\(\(?["']\.(zarr|h5|hdf5|npy|tiff?)["']|\.split\(["']/["']\)""")
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("stores/", "testing/")):
            continue
        text = path.read_text()
        for needle in ("dvid://", "memory://", "DvidAddress", '"://"', "'://'", ".h5:"):
            assert needle not in text, f"{rel} mentions {needle!r}"
        if rel not in ("_cli/main.py", "_cli/scores.py"):  # the command line splits its own flags (KEY=VALUE, Z0:Z1, NAME:RULE), never volumes
            found = splitting.search(text)
            assert found is None, f"{rel} takes a string apart like a volume string: {found.group(0)!r}"


def test_a_run_parses_each_volume_string_once_at_load(tmp_path, monkeypatch):
    """Following a run's config through the code: each volume string of the config enters
    ``stores`` once, when the config is loaded; every later step (planning, workers,
    writing, scoring, locks, reports) passes the parsed reference."""
    import json

    import numpy as np

    from labelstitch import stores
    from labelstitch.synthetic import em_volume

    gray, truth = em_volume((32, 48, 48), n_neurites=8, seed=2)
    np.save(tmp_path / "gray.npy", gray)
    np.save(tmp_path / "truth.npy", truth.astype(np.uint32))
    np.save(tmp_path / "keep.npy", np.where(truth == truth[0, 0, 0], 7, 0).astype(np.uint32))
    config = {"input": "gray.npy", "output": "out.zarrs/seg.zarr", "ground-truth": "truth.npy",
              "preserve-bodies": {"segmentation": "keep.npy", "bodies": [7]},
              "options": {"chunk-size": 32, "overlap": 4, "checkpoint-dir": "ckpt", "write-grayscale": True}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    parsed: list[str] = []
    original = stores.store_class

    def counting(text):
        if not isinstance(text, stores.VolumeRef):
            parsed.append(str(text))
        return original(text)

    monkeypatch.setattr(stores, "store_class", counting)
    result = labelstitch.run(tmp_path / "run.json")
    strings = [p for p in parsed if not p.endswith("-grayscale.zarr")]  # the one volume the run names itself
    assert sorted(strings) == sorted(["gray.npy", "out.zarrs/seg.zarr", "truth.npy", "keep.npy"]), parsed
    assert len(parsed) == 5
    assert result.output == str(tmp_path / "out.zarrs" / "seg.zarr")
    assert (tmp_path / "out.zarrs" / "seg.zarr" / "zarr.json").exists() and not (tmp_path / "out.zarr").exists()


def test_the_dvid_test_server_shares_no_code_with_the_client():
    """So the client is tested against the API reference, not against its own assumptions."""
    known = modules()
    server = [m for m in known if m == "testing.dvid" or m.startswith("testing.dvid.")]
    assert len(server) >= 6  # the handler is split by instance type around the state model
    for module in server:
        assert package_imports(module, known[module], known) <= {"testing._labelmap", *server}, module
    assert package_imports("testing._labelmap", known["testing._labelmap"], known) == set()


def test_no_module_outside_testing_is_over_500_lines():
    for module, path in modules().items():
        if module.split(".")[0] != "testing":
            lines = len(path.read_text().splitlines())
            assert lines <= 500, f"{module} has {lines} lines: split it where it has two subjects"


def test_public_names_are_importable_and_documented():
    assert len(set(labelstitch.__all__)) == len(labelstitch.__all__)
    for name in labelstitch.__all__:
        obj = getattr(labelstitch, name)
        if name.startswith("__"):
            continue
        assert inspect.getdoc(obj), f"labelstitch.{name} has no docstring"
    public = {n for n in dir(labelstitch) if not n.startswith("_")}
    modules_ = {n for n in public if inspect.ismodule(getattr(labelstitch, n))}
    assert public - modules_ <= set(labelstitch.__all__), public - modules_ - set(labelstitch.__all__)


def test_readme_lists_every_public_function():
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    for name in labelstitch.__all__:
        obj = getattr(labelstitch, name)
        if inspect.isfunction(obj):
            assert f"`{name}(" in readme, f"README does not list {name}"


def test_architecture_doc_lists_every_module():
    doc = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    for module, path in modules().items():
        rel = path.relative_to(PACKAGE).as_posix()
        assert f"`{rel}`" in doc, f"docs/architecture.md has no line for {rel}"

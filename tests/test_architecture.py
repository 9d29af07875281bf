"""The package's shape, checked from its source (docs/architecture.md says the same in prose).

* **Layers.** Each package sits on a layer; a module imports only from lower layers or from its
  own package (lazy imports inside functions count too). No cycles, no upward imports.
* **Sizes.** No module over 400 lines; no function over 80 lines unless a comment starting
  ``# long:`` on the line above it (or on its ``def`` line) says why.
* **``__all__`` is true.** Every module has one; every name in it exists; every public function
  and class the module defines is in it.
* **Nothing private crosses a module boundary**: no ``from mechgrok.x import _y``, no
  ``thing._y`` on a name imported from another mechgrok module.
* **One home for on-disk names.** Only ``mechgrok/store/`` spells mechgrok's file names; nowhere
  else builds a path with ``folder / "literal"``. ``mechgrok/interop/`` is exempt: it reads and
  writes other tools' formats, whose file names are theirs, and ``resources.py`` reads the
  operating system's cgroup files.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "mechgrok"
MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# Lowest first. A module may import from a strictly lower layer, or from its own package.
LAYERS: dict[str, int] = {
    "algebra": 0, "errors": 0,
    "presets": 1, "stability": 1, "tasks": 1,
    "config": 2, "resources": 2,
    "models": 3,
    "measures": 3,
    "store": 4,
    "training": 5,
    "probes": 6,
    "analysis": 7,
    "interop": 8, "report": 8, "sweep": 8,
    "reproduce": 9,
    "cli": 10,
}
TOP = {"__init__", "__main__"}  # the public API and the entry point may import anything

# mechgrok's own file and folder names: store/ is their only home.
FILE_NAMES = {"config.json", "manifest.json", "metrics.jsonl", "split.safetensors", "run.lock",
              "analyze.lock", "measures.jsonl", "summary.json", "sweep.json", "imported.json",
              "sweep_done.json"}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package(module: str) -> str:
    """The first component under mechgrok (``mechgrok.store.run`` → ``store``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(tree: ast.Module, module: str, is_pkg: bool) -> list[tuple[int, str, list[str]]]:
    """(line, imported mechgrok module, names) for every import, relative ones resolved."""
    out = []
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "mechgrok"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "mechgrok":
                out.append((node.lineno, target, [a.name for a in node.names]))
    return out


IDS = [_rel(p) for p in MODULES]


def test_every_package_has_a_layer() -> None:
    pkgs = {_package(_module_name(p)) for p in MODULES} - TOP
    assert pkgs <= set(LAYERS), f"give these a layer in LAYERS: {sorted(pkgs - set(LAYERS))}"


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_imports_go_down_the_layers(path: Path) -> None:
    module = _module_name(path)
    pkg = _package(module)
    if pkg in TOP:
        return
    bad = []
    for line, target, names in _imports(_tree(path), module, path.name == "__init__.py"):
        tpkg = _package(target)
        if tpkg == pkg:
            continue
        if tpkg == "__init__":  # `from mechgrok import __version__`-style leaf reads only
            if set(names) <= {"__version__"}:
                continue
            bad.append(f"line {line}: imports the top-level API ({names})")
            continue
        if LAYERS.get(tpkg, 99) >= LAYERS[pkg]:
            bad.append(f"line {line}: {pkg} (layer {LAYERS[pkg]}) imports {target} "
                       f"(layer {LAYERS.get(tpkg)})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_module_size(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{_rel(path)} has {n} lines (at most {MAX_MODULE_LINES})"


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_function_size(path: Path) -> None:
    lines = path.read_text().splitlines()
    long = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = node.end_lineno - node.lineno + 1
            said = any("# long:" in lines[i - 1] for i in (first - 1, node.lineno) if i >= 1)
            if n > MAX_FUNCTION_LINES and not said:
                long.append(f"{node.name} (line {node.lineno}): {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines without '# long: why': {long}"


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "__main__.py"],
                         ids=[i for i in IDS if not i.endswith("__main__.py")])
def test_all_is_true(path: Path) -> None:
    module = _module_name(path)
    tree = _tree(path)
    assigned = any(
        isinstance(t, ast.Name) and t.id == "__all__"
        for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
    assert assigned, f"{module} has no __all__"
    mod = importlib.import_module(module)
    declared = list(mod.__all__)
    assert len(set(declared)) == len(declared), f"{module}.__all__ repeats a name"
    missing = [n for n in declared if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it does not have: {missing}"
    defined = {n.name for n in tree.body
               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               and not n.name.startswith("_")}
    unlisted = sorted(defined - set(declared))
    assert not unlisted, (f"{module} defines public {unlisted} but leaves them out of __all__ "
                          f"(list them, or make them private)")


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_nothing_private_crosses_modules(path: Path) -> None:
    module = _module_name(path)
    tree = _tree(path)
    bad = []
    imported: set[str] = set()
    for line, target, names in _imports(tree, module, path.name == "__init__.py"):
        for n in names:
            if n.startswith("_") and not n.startswith("__"):
                bad.append(f"line {line}: imports {n} from {target}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("mechgrok")):
            imported |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names
                         if a.name.startswith("mechgrok")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in imported:
                bad.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not bad, f"{module} reaches into other modules' private names:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", [p for p in MODULES if _package(_module_name(p)) not in
                                  ("store", "interop", "resources")],
                         ids=[i for i in IDS if not i.startswith(
                             ("mechgrok/store", "mechgrok/interop", "mechgrok/resources"))])
def test_only_store_spells_file_names(path: Path) -> None:
    bad = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Constant) and node.value in FILE_NAMES:
            bad.append(f"line {node.lineno}: {node.value!r}")
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                and isinstance(node.right, ast.Constant) and isinstance(node.right.value, str)):
            bad.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not bad, (f"{_rel(path)} spells on-disk names that belong to mechgrok/store:\n"
                     + "\n".join(bad))

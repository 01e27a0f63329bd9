"""The codebase's shape, checked with ``ast`` so that it stays true (docs/architecture.md).

- no import cycle between modules of ``src/rlft`` (imports inside functions count too);
- layers point down: a package imports only packages of its own layer or below (``LAYERS``);
- ``rlft.algorithms`` (the maths) imports nothing else of rlft;
- no private name (``_x``) is imported from another package;
- no file over 500 lines, no function over 80 lines;
- the test folders mirror the packages of ``src/rlft``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rlft"
TESTS = Path(__file__).resolve().parent
# Test folders that are not a package of src/rlft: the shipped examples, and test data.
OTHER_TEST_FOLDERS = {"examples", "data"}

# Bottom to top. A package may import from its own layer and the layers before it.
LAYERS: list[set[str]] = [
    {"errors", "types", "version", "schema", "algorithms", "plugins"},
    {"common"},
    {"models"},
    {"rewards", "sandbox"},
    {"tasks"},
    {"config", "envs"},
    {"rollout"},
    {"evaluation"},
    {"responsible", "feedback", "tracking"},
    {"serving"},
    {"trainers"},
    {"online"},
    {"report"},
    {"api", "extend"},
    {"cli", "__init__", "__main__"},
]
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every rlft import in the file, lazy ones too."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "rlft":
                found.append((module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "rlft"]
    return found


def _edges() -> dict[str, set[str]]:
    """Module -> the rlft modules it imports (``from rlft.x import y`` counts as rlft.x.y when
    that is a module, else as rlft.x)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for module, names, _ in _imports(name, path):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
            deps.update(targets or ([module] if module in MODULES else []))
        graph[name] = deps - {name}
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycle():
    graph, state, cycles = _edges(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_layers_point_down():
    layer_of = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
    packages = {_package(m) for m in MODULES}
    assert packages <= set(layer_of), f"packages without a layer: {packages - set(layer_of)}"
    wrong = []
    for name, path in MODULES.items():
        for module, _, line in _imports(name, path):
            here, there = _package(name), _package(module)
            if layer_of[there] > layer_of[here]:
                wrong.append(f"{path.relative_to(SRC.parent)}:{line}: {here} imports {module} (a higher layer)")
    assert not wrong, "\n".join(wrong)


def test_algorithms_import_nothing_else_of_rlft():
    bad = [
        f"{path.relative_to(SRC.parent)}:{line}: {module}"
        for name, path in MODULES.items() if _package(name) == "algorithms"
        for module, _, line in _imports(name, path) if _package(module) != "algorithms"
    ]
    assert not bad, "\n".join(bad)


def test_no_private_name_is_imported_from_another_package():
    bad = [
        f"{path.relative_to(SRC.parent)}:{line}: {module}.{n}"
        for name, path in MODULES.items()
        for module, names, line in _imports(name, path) if _package(module) != _package(name)
        for n in names if n.startswith("_") and not n.startswith("__")
    ]
    assert not bad, "\n".join(bad)


def test_no_file_or_function_too_long():
    too_long = []
    for path in MODULES.values():
        source = path.read_text()
        if len(source.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(SRC.parent)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {node.name} is {length} lines")
    assert not too_long, "\n".join(too_long)


def test_the_checks_see_the_code():
    """The walkers find what they must: a known import edge and a known function (so an empty
    module list or a broken parser cannot make the tests above pass vacuously)."""
    graph = _edges()
    assert "rlft.trainers.run" in graph["rlft.trainers.loop"]
    assert len(MODULES) > 50


def test_test_folders_mirror_the_packages():
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    assert folders - OTHER_TEST_FOLDERS <= packages, "a test folder named after no package"
    assert not list(TESTS.glob("*/*/test_*.py")), "tests sit one folder deep"

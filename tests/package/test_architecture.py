"""The package's imports form no cycle and point one way, through the layers ARCHITECTURE.md
names; each layer imports alone, and one whose extra is missing says which to install."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "rankme_fast"

# ARCHITECTURE.md, "Layers": a module may import only from its own layer or the ones above it.
LAYERS = [
    ("math", ["metrics", "conventions", "spectrum", "slq", "_checks", "_extras"]),
    ("inputs", ["_native", "_inputs"]),
    ("kernels", ["backends"]),
    ("state", ["state", "distributed", "sample_limit", "update", "uncertainty", "accumulate", "api", "lidar"]),
    ("engine", ["corpus"]),
    ("layers", ["io", "scoring", "integrations", "scaling", "audio", "study", "demo"]),
    ("cli", ["cli"]),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> rankme_fast modules it imports, anywhere in its body (lazy imports count).
    `from package import module` is an edge to that module; a package's own submodules and
    the package itself (which Python initialises first anyway) are not edges."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rankme_fast"):
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                targets.update(subs or [node.module])
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name.startswith("rankme_fast."))
        edges[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
        if path.name == "__init__.py":  # a package's __init__ gathers its own submodules
            edges[name] = {t for t in edges[name] if not t.startswith(name + ".")}
    return edges


def _layer(module: str) -> int | None:
    relative = module.removeprefix("rankme_fast.")
    for rank, (_, members) in enumerate(LAYERS):
        if any(relative == m or relative.startswith(m + ".") for m in members):
            return rank
    return None


def test_no_import_cycles():
    edges = _imports(_modules())
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_point_down_the_layers():
    modules = _modules()
    unplaced = [m for m in modules if m != "rankme_fast" and _layer(m) is None]
    assert not unplaced, f"modules in no layer of ARCHITECTURE.md: {unplaced}"
    upward = [
        f"{source} ({LAYERS[_layer(source)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for source, targets in _imports(modules).items()
        if source != "rankme_fast"
        for target in targets
        if target != "rankme_fast" and _layer(target) > _layer(source)
    ]
    assert not upward, "\n".join(upward)


LAYER_IMPORTS = ["rankme_fast", "rankme_fast.api", "rankme_fast.update", "rankme_fast.io", "rankme_fast.scoring",
                 "rankme_fast.integrations", "rankme_fast.integrations.metric", "rankme_fast.scaling",
                 "rankme_fast.audio", "rankme_fast.study", "rankme_fast.cli"]  # fmt: skip


@pytest.mark.parametrize("module", LAYER_IMPORTS)
def test_each_layer_imports_alone(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_no_block_of_six_lines_stands_twice():
    """One thing, one place: no six consecutive code lines (blank lines, comments, imports and
    the parameter lists of signatures aside) appear twice in the package."""
    import re
    from collections import defaultdict

    parameter = re.compile(r"^(\*,|def \w+\(|\w+: .+,|\) -> .+:)$")
    windows: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        code = [(number, " ".join(line.split())) for number, line in enumerate(path.read_text().splitlines(), 1)]
        code = [(n, line) for n, line in code if line and not line.startswith(("#", "import ", "from "))
                and not parameter.match(line)]  # fmt: skip
        for start in range(len(code) - 5):
            windows[tuple(line for _, line in code[start : start + 6])].append(f"{path.name}:{code[start][0]}")
    repeated = {" | ".join(block): places for block, places in windows.items() if len(places) > 1}
    assert not repeated, repeated

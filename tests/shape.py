"""The shape of the code, measured: the daemon's import graph and the long functions.

`python -m tests.shape` prints both for daemon/ and ctl/; tests/test_shape.py holds the code to
what the README's code map promises (no import circle, even under TYPE_CHECKING; no function much
longer than a screen without its docstring saying why).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"insiders": ROOT / "daemon" / "insiders", "insidersctl": ROOT / "ctl" / "insidersctl"}
LONG = 60
# A docstring that says why a function is long carries this phrase.
REASON = "Long because"


def module_name(package: str, path: Path) -> str:
    parts = [package, *path.relative_to(PACKAGES[package]).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(package, path): path for path in sorted(PACKAGES[package].rglob("*.py"))}


def absolute_imports(name: str, path: Path) -> set[str]:
    """Every module (or module.name) that module `name` imports, relative imports resolved,
    TYPE_CHECKING blocks and function bodies included."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's own modules that `name` imports."""
    found: set[str] = set()
    for target in absolute_imports(name, path):
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def graph(package: str) -> dict[str, set[str]]:
    mods = modules(package)
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


# The daemon's layers, as the README's code map draws them, lowest first: a module may import
# its own layer and the ones below, never one above. Within "parts", a part imports no other part
# but those ALLOWED names (the handlers of index/ are served by http/).
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "foundations",
        frozenset(
            {"__init__", "errors", "names", "archives", "distributions", "fsutil", "credentials"}
            | {"config", "logs", "logfile", "systemd", "structs"}
        ),
    ),
    ("data", frozenset({"store", "tokens", "repos", "ingest", "documents"})),
    ("parts", frozenset({"http", "index", "watcher", "mirror"})),
    ("control plane", frozenset({"control"})),
    ("root", frozenset({"app", "__main__", "options"})),
)
ALLOWED = {"index": {"http"}}


def top(module: str) -> str:
    """The daemon's top-level module or package that `module` is part of."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_breaches(edges: dict[str, set[str]]) -> list[str]:
    """Each import that goes up the layer table, or from one part to another not ALLOWED."""
    rank = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
    found = []
    for module, targets in sorted(edges.items()):
        source = top(module)
        for target in sorted(targets):
            dest = top(target)
            if source == dest or dest in ALLOWED.get(source, ()):
                continue
            if source not in rank or dest not in rank:
                found.append(f"{module} -> {target}: not in the layer table")
            elif rank[dest] > rank[source] or (
                rank[dest] == rank[source] and LAYERS[rank[source]][0] == "parts"
            ):
                found.append(f"{module} -> {target}")
    return found


@dataclass(frozen=True)
class Function:
    where: str
    lines: int
    reasoned: bool


def functions(package: str) -> Iterator[Function]:
    for path in modules(package).values():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                rel = path.relative_to(ROOT)
                yield Function(f"{rel}:{node.lineno} {node.name}", lines, REASON in doc)


def long_functions(package: str) -> list[Function]:
    return sorted((f for f in functions(package) if f.lines > LONG), key=lambda f: -f.lines)


def main(argv: list[str]) -> int:
    """`python -m tests.shape [CHECKOUT]`: the figures for this tree, or for another checkout."""
    global ROOT
    if len(argv) > 1:
        ROOT = Path(argv[1]).resolve()
        PACKAGES.update(
            insiders=ROOT / "daemon" / "insiders", insidersctl=ROOT / "ctl" / "insidersctl"
        )
    for package, folder in PACKAGES.items():
        mods = modules(package)
        sizes = [len(p.read_text().splitlines()) for p in mods.values()]
        where = folder.relative_to(ROOT)
        print(f"{where}: {len(mods)} modules, {sum(sizes)} lines, largest {max(sizes)}")
        for component in circles(graph(package)):
            print("  import circle: " + " -> ".join(component))
        if package == "insiders":
            for breach in layer_breaches(graph(package)):
                print(f"  against the layers: {breach}")
        for function in long_functions(package):
            why = " (reason given)" if function.reasoned else ""
            print(f"  {function.lines:4d} lines  {function.where}{why}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

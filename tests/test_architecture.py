"""The package's shape: no import cycles between dsmctl modules, and numerics that never import the CLI stack."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "dsmctl"
NUMERICS = ("dsmctl.nn", "dsmctl.nll", "dsmctl.sample", "dsmctl.data", "dsmctl.analysis", "dsmctl.units")
CLI_STACK = ("typer", "rich", "accelerate")


def module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name, path, known):
    """Every dsmctl module and top-level third-party package `name` imports (also inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known)
    return out


def graph():
    known = modules()
    return {name: {m for m in imports(name, p, known) if m in known and m != name} for name, p in known.items()}, known


def find_cycle(edges):
    """A list of modules forming a cycle, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if not state.get(m):
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if not state.get(n):
            found = visit(n)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    edges, _ = graph()
    # A package's __init__ importing its own submodules is not a cycle in practice; submodule -> package is.
    edges = {n: {m for m in ms if not n.startswith(m + ".")} for n, ms in edges.items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


@pytest.mark.parametrize("prefix", NUMERICS)
def test_numerics_never_import_the_cli_stack(prefix):
    known = modules()
    for name, path in known.items():
        if name == prefix or name.startswith(prefix + "."):
            bad = {m for m in imports(name, path, known) if m and m.split(".")[0] in CLI_STACK}
            assert not bad, f"{name} imports {sorted(bad)}"


# (importer package, imported package): layers that must not reach up. The NLL estimators do not draw figures or
# run the other analyses: those extras belong to eval-nll's orchestration (dsmctl/evaluation.py).
FORBIDDEN = [("dsmctl.nll", "dsmctl.analysis")]


@pytest.mark.parametrize("importer,imported", FORBIDDEN)
def test_packages_never_reach_up(importer, imported):
    known = modules()
    for name, path in known.items():
        if name == importer or name.startswith(importer + "."):
            bad = {m for m in imports(name, path, known) if m and (m == imported or m.startswith(imported + "."))}
            assert not bad, f"{name} imports {sorted(bad)}"

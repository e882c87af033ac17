"""The data flows one way: trace <- producers (runner, formats) and analysis <- compare <- report /
plots <- flows <- cli. Checked on the import statements of every module (function-level imports
too), so a shortcut upwards or an import cycle fails here, not in a review."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# package -> the packages it may import (besides itself and the top-level ``perfreview``)
ALLOWED = {
    "perfreview": set(),  # the package's __init__ (__version__): every layer may read it
    "perfreview.trace": set(),
    "perfreview.formats": {"perfreview.trace"},
    "runner": {"perfreview.trace"},
    "perfreview.analysis": {"perfreview.trace"},
    "perfreview.compare": {"perfreview.trace", "perfreview.analysis"},
    "perfreview.report": {"perfreview.trace", "perfreview.analysis", "perfreview.compare"},
    "perfreview.plots": {"perfreview.trace", "perfreview.analysis", "perfreview.compare"},
    "perfreview.flows": {"perfreview.trace", "perfreview.analysis", "perfreview.compare", "perfreview.report",
                         "perfreview.plots", "perfreview.formats", "runner"},
    "perfreview.cli": {"perfreview.trace", "perfreview.analysis", "perfreview.compare", "perfreview.report",
                       "perfreview.plots", "perfreview.formats", "perfreview.flows", "runner"},
    "perfreview.__main__": {"perfreview.cli"},  # python -m perfreview: the CLI, nothing else
    # GPU and benchmark scripts use the flows like the CLI does, never the CLI itself
    "scripts": {"perfreview.trace", "perfreview.analysis", "perfreview.compare", "perfreview.report",
                "perfreview.plots", "perfreview.formats", "perfreview.flows", "runner"},
    "bench": {"perfreview.trace", "perfreview.analysis", "perfreview.compare", "perfreview.report",
              "perfreview.plots", "perfreview.formats", "perfreview.flows", "runner"},
}
OURS = ("perfreview", "runner")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str | None:
    for pkg in sorted(ALLOWED, key=len, reverse=True):
        if module == pkg or module.startswith(pkg + "."):
            return pkg
    return None


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import of ours in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in OURS:
                out.append((name, id(node) in top))
    return out


def sources() -> list[Path]:
    return [p for d in ("perfreview", "runner", "scripts", "bench") if (ROOT / d).is_dir()
            for p in (ROOT / d).rglob("*.py")]


def test_no_import_goes_up_a_layer():
    bad = []
    for path in sources():
        mine = package_of(module_name(path))
        assert mine is not None, f"{path}: not in a known layer"
        for name, _ in imports(path):
            theirs = package_of(name)
            if theirs in (None, mine, "perfreview"):
                continue  # the same package, or perfreview's __init__ (__version__)
            if theirs not in ALLOWED[mine]:
                bad.append(f"{module_name(path)} imports {name} ({mine} may not use {theirs})")
    assert bad == []


def test_no_import_cycles():
    modules = {module_name(p): p for p in sources()}
    graph = {m: {n for name, top in imports(p) if top for n in (name, name.rpartition(".")[0]) if n in modules}
             for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph[m] - {m}):
            if state.get(n) == 1:
                return stack + [m, n]
            if n not in state and (cycle := visit(n, stack + [m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(modules):
        if m not in state:
            assert visit(m, []) is None


def test_run_json_is_written_in_one_module():
    # RunMeta.to_json is the only serialisation of run metadata, called by trace.runs alone
    callers = [module_name(p) for p in sources() if ".to_json()" in p.read_text()]
    assert callers == ["perfreview.trace.runs"], callers

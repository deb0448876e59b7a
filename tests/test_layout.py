"""The layout's arrows, read from the source: the engine imports no experiment's module, an
experiment imports nothing of the engine but its protocol, no jaxcl modules import each other in
a cycle (imports inside functions count), and nothing reaches a private jax path."""

import ast
import glob
import os

import pytest

from support import ROOT

PKG = os.path.join(ROOT, "jaxcl")


def _module(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def imports() -> dict[str, set[str]]:
    """{module: every jaxcl module it imports, at any depth of its code}."""
    paths = glob.glob(os.path.join(PKG, "**", "*.py"), recursive=True)
    modules = {_module(p) for p in paths}
    out = {}
    for path in paths:
        mod = _module(path)
        pkg = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("jaxcl")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                        + ([base] if base else [])
                    )
                if base.startswith("jaxcl"):
                    for a in node.names:  # `from pkg import mod` imports pkg.mod, not pkg's rest
                        sub = f"{base}.{a.name}"
                        found.add(sub if sub in modules else base)
        out[mod] = found
    return out


def test_engine_imports_no_experiment():
    graph = imports()
    engine = [m for m in graph if m.startswith("jaxcl.engine")]
    assert {
        "jaxcl.engine.runner",
        "jaxcl.engine.programs",
        "jaxcl.engine.checkpoint",
        "jaxcl.engine.rundir",
        "jaxcl.engine.sweep",
        "jaxcl.engine.cli",
    } <= set(engine)
    for m in engine:
        bad = {i for i in graph[m] if i.startswith("jaxcl.experiments")}
        assert not bad, f"{m} imports {bad}"


def test_experiments_import_only_the_engines_protocol():
    graph = imports()
    for m, deps in graph.items():
        if m.startswith("jaxcl.experiments"):
            bad = {i for i in deps if i.startswith("jaxcl.engine") and i != "jaxcl.engine.protocol"}
            assert not bad, f"{m} imports {bad}"


def test_no_import_cycles():
    graph = imports()
    known = set(graph)
    edges = {m: {i for i in deps if i in known and i != m} for m, deps in graph.items()}
    # a package's __init__ importing its own submodules is how it registers them; the
    # submodules importing the package root back would be a cycle and is checked as such
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for n in edges[m]:
            if n.startswith(m + "."):
                continue  # package -> its own submodule
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack + [m, n]))
            if n not in state:
                visit(n, stack + [m])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [])


def _private_jax(path: str) -> list[str]:
    """The private jax paths a file reaches: an import of a module of jax or jaxlib with a
    component that starts with an underscore (jax._src, jaxlib._jax, `from jax import _src`),
    or an attribute of that kind read off the jax module (jax._src.config)."""
    found = []
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            names = [f"{node.value.id}.{node.attr}"]
        for name in names:
            parts = name.split(".")
            if parts[0] in ("jax", "jaxlib") and any(p.startswith("_") for p in parts[1:]):
                if not parts[-1].startswith("__"):  # jax.__version__ is public
                    found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {name}")
    return found


@pytest.mark.gpu_smoke
def test_no_module_reaches_a_private_jax_path(tmp_path):
    """jaxcl and benchmarks/ use jax's public API only, so that a new jax's changes come as
    announced deprecations; the check itself finds each kind of private access."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import jax._src.config\nfrom jax._src import core\nfrom jaxlib import _jax\n"
        "import jax\nx = jax._src.dtypes\nimport jax.numpy as jnp\nv = jax.__version__\n"
    )
    assert [f.split(": ")[1] for f in _private_jax(str(planted))] == [
        "jax._src.config",
        "jax._src",
        "jax._src.core",
        "jaxlib._jax",
        "jax._src",
    ]
    paths = glob.glob(os.path.join(PKG, "**", "*.py"), recursive=True) + glob.glob(
        os.path.join(ROOT, "benchmarks", "*.py")
    )
    assert len(paths) > 50
    assert [f for p in sorted(paths) for f in _private_jax(p)] == []

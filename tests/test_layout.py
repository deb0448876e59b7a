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


# The fields BaseConfig requires of every experiment's config: the engine reads them by name.
ENGINE_FIELDS = {"experiment", "seed", "steps", "log_every"}


def experiment_words() -> tuple[set[str], set[str]]:
    """(the registered experiments' names, every name that is one experiment's own: a config
    field that is not ENGINE_FIELDS, a `jaxcl report` flag's dest, an id field)."""
    import argparse
    import dataclasses

    import jaxcl  # noqa: F401  (registers the experiments)
    from jaxcl.engine import compare, protocol

    own = set()
    for name in protocol.names():
        exp = protocol.get(name)
        own |= {f.name for f in dataclasses.fields(exp.Config)} - ENGINE_FIELDS
        parser = argparse.ArgumentParser()
        exp.report_arguments(parser)
        own |= {a.dest for a in parser._actions} - {"help"}
        own |= set(exp.id_fields) - set(compare.ENGINE_ID_FIELDS)
    return set(protocol.names()), own - ENGINE_FIELDS


def test_experiment_words_cover_what_the_engine_must_not_name():
    """The forbidden list is read from the registry: it holds what the engine once named."""
    names, own = experiment_words()
    assert names >= {"liao", "geometry"}
    assert own >= {"C_m", "eta", "prune_fraction", "n_minor_classes", "init_stats", "trend"}
    assert own >= {"claim", "theta", "p", "d"}
    assert not own & ENGINE_FIELDS


def engine_naming(names: set[str], own: set[str]) -> list[str]:
    """Where jaxcl/engine/ names an experiment or a name of one: an experiment's name as a word
    anywhere (code, comments, docstrings), an own name with an underscore (an identifier no
    English sentence holds) as a word anywhere, and any own name as a whole string literal (one
    letter: a subscript, e.g. row["d"]; f-string text is text), an attribute or a keyword
    argument that the engine does not define itself."""
    import re

    found = []
    paths = sorted(glob.glob(os.path.join(PKG, "engine", "*.py")))
    trees = {p: ast.parse(open(p).read()) for p in paths}
    defined = set()  # names the engine gives its own functions, classes, attributes, arguments
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
    words = names | {w for w in own if "_" in w}
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(words))) + r")(?![\w])")
    for path, tree in trees.items():
        rel = os.path.relpath(path, ROOT)
        text = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        keys = {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
        for i, line in enumerate(open(path).read().splitlines(), 1):
            for m in pattern.finditer(line):
                if m.group(1) in own or m.group(1).lower() in names:
                    found.append(f"{rel}:{i}: {m.group(1)!r}")
        for node in ast.walk(tree):
            hit = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = node.value in own | names and id(node) not in text
                hit = node.value if named and (len(node.value) > 1 or id(node) in keys) else None
            elif isinstance(node, ast.Attribute) and node.attr not in defined:
                hit = node.attr if node.attr in own else None
            elif isinstance(node, ast.keyword) and node.arg not in defined:
                hit = node.arg if node.arg in own else None
            if hit is not None:
                found.append(f"{rel}:{node.lineno}: {hit!r}")
    return found


def test_engine_names_no_experiment_and_none_of_its_fields():
    """The engine learns of experiments through the protocol only: no experiment's name, config
    field, report flag or identifying field appears in jaxcl/engine/ (a new experiment's fields
    are covered as soon as it registers)."""
    names, own = experiment_words()
    assert engine_naming(names, own) == []


def test_engine_naming_finds_what_it_looks_for(tmp_path, monkeypatch):
    """The check itself: a field read as a string, an attribute, a keyword and in a comment, and
    an experiment named in a docstring, are each found."""
    engine = tmp_path / "jaxcl" / "engine"
    engine.mkdir(parents=True)
    (engine / "bad.py").write_text(
        '"""Knows the toy experiment."""\n'
        "def f(cfg, row, g):\n"
        "    g(scale_factor=1)  # reads scale_factor\n"
        '    return cfg.width, row["width"], row["w"], f"{g}w", "w"\n'
    )
    monkeypatch.setattr(__import__(__name__), "PKG", str(tmp_path / "jaxcl"))
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    found = engine_naming({"toy"}, {"width", "scale_factor", "w"})
    assert sorted(found) == [
        "jaxcl/engine/bad.py:1: 'toy'",
        "jaxcl/engine/bad.py:3: 'scale_factor'",
        "jaxcl/engine/bad.py:3: 'scale_factor'",
        "jaxcl/engine/bad.py:3: 'scale_factor'",
        "jaxcl/engine/bad.py:4: 'w'",
        "jaxcl/engine/bad.py:4: 'width'",
        "jaxcl/engine/bad.py:4: 'width'",
    ]


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

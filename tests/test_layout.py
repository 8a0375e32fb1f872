"""The package's layout, checked from the source with ``ast`` (nothing is imported, so an import
hidden inside a function counts as much as one at the top of a module):

(a) the import graph of minivq/*.py has no cycle;
(b) code that only uses trained models never imports a trainer (``minivq.train_*``), not even
    through another module: a model module owns its inference and persistence (load/save,
    encode/decode, sequences), as nanoGPT's sample.py imports model.py, not train.py.
    The rule, file by file:
      minivq/generate.py, evaluate.py, sampling.py and bundle.py/plots.py/report.py where present:
          no trainer anywhere in what they import;
      lessons/*.py: no trainer, except the lessons that train a model with the library's trainer,
          each of which may import exactly that trainer (LESSONS_THAT_TRAIN; the test also checks
          that they still call its train(), so the allowance cannot outlive its reason).
          Lesson 03 trains too, but with its own loop over library layers: no trainer.
      minivq/pipeline.py and the command lines (train.py) import trainers to train; they are not
          listed here.
(c) no file uses another module's private name: ``X._name`` where X is an alias of a minivq
    module, or ``from minivq.x import _name``.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "minivq"

MODEL_USERS = ("generate", "evaluate", "sampling", "bundle", "plots", "report")  # minivq modules
LESSONS_THAT_TRAIN = {"05_vqvae.py": "minivq.train_vqvae", "07_transformer.py": "minivq.train_prior"}


# ----------------------------------------------------------------------------- reading imports
def package_modules(pkg=PKG):
    """{'minivq.x': path} for every module of the package ('minivq' is its __init__.py)."""
    mods = {f"{pkg.name}.{p.stem}": p for p in sorted(pkg.glob("*.py")) if p.stem != "__init__"}
    mods[pkg.name] = pkg / "__init__.py"
    return mods


def imports_of(tree, modules, pkg="minivq", this=None):
    """Every import of a package module anywhere in ``tree`` (module level and inside functions)
    -> list of (module, line, name bound in the file or None, imported attribute or None).
    ``from minivq import x`` binds module minivq.x when x.py exists, else a name of __init__.py;
    ``this``: the importing module's name, to resolve relative imports."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in modules:
                    found.append((a.name, node.lineno, a.asname, None))  # bare `import minivq.x`: asname None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = ".".join(filter(None, [pkg, base]))
            if base == pkg:
                for a in node.names:
                    sub = f"{pkg}.{a.name}"
                    if sub in modules:
                        found.append((sub, node.lineno, a.asname or a.name, None))
                    else:
                        found.append((pkg, node.lineno, None, a.name))
            elif base in modules:
                for a in node.names:
                    found.append((base, node.lineno, None, a.name))
    return [f for f in found if f[0] != this]


def import_graph(pkg=PKG):
    """{'minivq.x': {modules it imports}} over minivq/*.py."""
    mods = package_modules(pkg)
    return {m: {imp for imp, *_ in imports_of(ast.parse(p.read_text()), mods, pkg.name, this=m)}
            for m, p in mods.items()}


def find_cycle(graph):
    """One import cycle as a list [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                cyc = visit(n)
                if cyc:
                    return cyc
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            cyc = visit(m)
            if cyc:
                return cyc
    return None


def reachable(graph, starts):
    """Every module imported, directly or through others, from the modules ``starts``."""
    seen, todo = set(), list(starts)
    while todo:
        m = todo.pop()
        for n in graph.get(m, ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def trainers_reached(path, graph, modules, allowed=()):
    """-> sorted 'minivq.train_x (via ...)' lines: trainers the file at ``path`` imports or pulls in."""
    direct = {m for m, *_ in imports_of(ast.parse(Path(path).read_text()), modules)}
    bad = []
    for d in sorted(direct):
        for m in sorted(({d} | reachable(graph, [d])) - set(allowed)):
            if m.split(".")[-1].startswith("train_"):
                bad.append(m if m == d else f"{m} (via {d})")
    return sorted(set(bad))


def private_uses(tree, modules, pkg="minivq", this=None):
    """-> ['line N: X._name' | 'line N: imports minivq.x._name'] in ``tree``."""
    aliases, out = {}, []
    for mod, line, bound, attr in imports_of(tree, modules, pkg, this):
        if attr is None and bound:
            aliases[bound] = mod
        if attr and attr.startswith("_") and not attr.startswith("__"):
            out.append(f"line {line}: imports {mod}.{attr}")
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        base = node.value
        parts = []
        while isinstance(base, ast.Attribute):
            parts.append(base.attr)
            base = base.value
        if not isinstance(base, ast.Name):
            continue
        dotted = ".".join([base.id] + parts[::-1])
        if base.id in aliases and not parts:  # X._name, X bound to a package module
            out.append(f"line {node.lineno}: {dotted}.{node.attr}")
        elif dotted in modules and dotted != this:  # minivq.x._name after `import minivq.x`
            out.append(f"line {node.lineno}: {dotted}.{node.attr}")
    return sorted(set(out), key=lambda s: (int(s.split()[1].rstrip(":")), s))


# ----------------------------------------------------------------------------- the checks
def test_the_package_and_its_users_are_found():
    mods = package_modules()
    for m in ("minivq.vqvae", "minivq.transformer", "minivq.generate", "minivq.train_vqvae", "minivq.data"):
        assert m in mods
    for name in LESSONS_THAT_TRAIN:
        assert (ROOT / "lessons" / name).is_file(), f"LESSONS_THAT_TRAIN names a missing lesson {name}"
    assert len(import_graph()) == len(mods)


def test_import_graph_has_no_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", MODEL_USERS)
def test_model_users_import_no_trainer(name):
    path = PKG / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"minivq/{name}.py does not exist (yet)")
    bad = trainers_reached(path, import_graph(), package_modules())
    assert not bad, f"minivq/{name}.py uses trained models but imports trainers: {bad}"


@pytest.mark.parametrize("path", sorted((ROOT / "lessons").glob("*.py")), ids=lambda p: p.name)
def test_lessons_import_only_the_trainer_they_train_with(path):
    allowed = LESSONS_THAT_TRAIN.get(path.name)
    bad = trainers_reached(path, import_graph(), package_modules(), allowed=[allowed] if allowed else [])
    assert not bad, (f"lessons/{path.name} imports trainers {bad}; a lesson that only uses a trained model "
                     "loads it through the model module (see LESSONS_THAT_TRAIN for the ones that train)")
    if allowed:  # the allowance holds only while the lesson trains with that trainer
        tree = ast.parse(path.read_text())
        aliases = {b for m, _, b, a in imports_of(tree, package_modules()) if m == allowed and b and a is None}
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and n.func.attr == "train" and isinstance(n.func.value, ast.Name) and n.func.value.id in aliases]
        assert calls, f"lessons/{path.name} is listed as training with {allowed} but never calls its train()"


def _all_private_uses():
    mods = package_modules()
    files = [(p, m) for m, p in mods.items()] + [(p, None) for d in ("lessons", "benchmarks")
                                                  for p in sorted((ROOT / d).glob("*.py"))]
    out = {}
    for p, m in files:
        uses = private_uses(ast.parse(p.read_text()), mods, this=m)
        if uses:
            out[str(p.relative_to(ROOT))] = uses
    return out


PRIVATE_OFFENDERS = _all_private_uses()  # read at collection, so the xfail reason lists them


@pytest.mark.xfail(bool(PRIVATE_OFFENDERS), strict=True,
                   reason="private names of other modules still used (being fixed in the internals work): "
                          + "; ".join(f"{f}: {', '.join(u)}" for f, u in sorted(PRIVATE_OFFENDERS.items())))
def test_no_module_uses_another_modules_private_names():
    assert not _all_private_uses(), _all_private_uses()


# ----------------------------------------------------------------------------- the checks can fail
def _fake_package(tmp_path, sources):
    pkg = tmp_path / "minivq"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    for name, src in sources.items():
        (pkg / f"{name}.py").write_text(src)
    return pkg


def test_a_cycle_is_found_even_inside_a_function(tmp_path):
    pkg = _fake_package(tmp_path, {
        "a": "from minivq import b\n",
        "b": "def f():\n    from minivq.c import g\n    return g\n",
        "c": "import minivq.a as A\nfrom minivq import __version__\n",
        "d": "from . import a\n"})
    graph = import_graph(pkg)
    assert graph["minivq.c"] == {"minivq.a", "minivq"} and graph["minivq.d"] == {"minivq.a"}
    assert find_cycle(graph) == ["minivq.a", "minivq.b", "minivq.c", "minivq.a"]
    (pkg / "b.py").write_text("x = 1\n")
    assert find_cycle(import_graph(pkg)) is None


def test_a_trainer_is_found_through_another_module(tmp_path):
    pkg = _fake_package(tmp_path, {
        "train_m": "from minivq import m\n", "m": "x = 1\n",
        "helper": "def f():\n    from minivq.train_m import train\n",
        "gen": "from minivq import helper\n", "ok": "from minivq import m\n"})
    graph, mods = import_graph(pkg), package_modules(pkg)
    assert trainers_reached(pkg / "gen.py", graph, mods) == ["minivq.train_m (via minivq.helper)"]
    assert trainers_reached(pkg / "helper.py", graph, mods) == ["minivq.train_m"]
    assert trainers_reached(pkg / "helper.py", graph, mods, allowed=["minivq.train_m"]) == []
    assert trainers_reached(pkg / "ok.py", graph, mods) == []


def test_private_uses_are_found(tmp_path):
    pkg = _fake_package(tmp_path, {"m": "def _h():\n    pass\n"})
    tree = ast.parse("import minivq.m\nfrom minivq import m as M\nfrom minivq.m import _h, x\n"
                     "def f():\n    return M._h, minivq.m._h, M.__doc__, M.public, self._own\n")
    assert private_uses(tree, package_modules(pkg)) == ["line 3: imports minivq.m._h", "line 5: M._h",
                                                          "line 5: minivq.m._h"]
    assert private_uses(ast.parse("import os\nos._exit\n"), package_modules(pkg)) == []


TRAIN_LINES_MAX = 60  # a trainer's train() reads top to bottom on one screen; the plumbing is in trainer.py


@pytest.mark.parametrize("path", sorted(PKG.glob("train_*.py")), ids=lambda p: p.name)
def test_trainers_use_the_skeleton_and_keep_train_short(path):
    tree = ast.parse(path.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "minivq"
                for a in n.names}
    assert "trainer" in imported, f"{path.name} does not build on minivq/trainer.py"
    trains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train"]
    assert len(trains) == 1, f"{path.name} should define one train()"
    n_lines = trains[0].end_lineno - trains[0].lineno + 1
    assert n_lines <= TRAIN_LINES_MAX, f"{path.name}: train() is {n_lines} lines (at most {TRAIN_LINES_MAX})"

"""Layering: the model library (tfddn/) does not reach up into the pipelines or the server.

`beam/` and `serving/` build on tfddn; only the command line (tfddn/cli/) and the demo,
which wire every part together, may import them. Imports inside functions count too: a
lazy import is still a dependency. Parsed with `ast`, so nothing is imported here.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tfddn"
# Top-level packages tfddn must not import (apache_beam: Beam pipelines live in beam/).
FORBIDDEN = ("beam", "serving", "apache_beam")
# Modules that wire the parts together: everything may be imported there.
WIRING = ("tfddn/cli/", "tfddn/demo.py")
# Known offenders while they are being fixed, as {module: {imported module}}, each with a
# TODO naming the issue that removes it. None today: the simulator takes the Beam pipeline
# as an argument (#14).
ALLOWED: dict[str, set[str]] = {}


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import anywhere in the tree.

    `from beam import preprocess` gives `beam.preprocess` for each name, so that an
    allow-list entry names exactly what is imported; literal `importlib.import_module`
    and `__import__` calls count as imports.
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ast.unparse(node.func) in ("importlib.import_module", "import_module",
                                             "__import__")):
            found.append((node.lineno, node.args[0].value))
    return found


def _forbidden(module: str) -> bool:
    return module.split(".")[0] in FORBIDDEN


def _library_modules() -> list[str]:
    paths = sorted(PACKAGE.rglob("*.py"))
    names = [p.relative_to(ROOT).as_posix() for p in paths]
    return [n for n in names if not n.startswith(WIRING)]


def test_the_checker_sees_every_kind_of_import():
    source = ("import serving.client as c\nfrom beam import preprocess, values\n"
              "def f():\n    from serving.server import ServerHandle\n"
              "    import importlib\n    importlib.import_module('apache_beam')\n"
              "from . import spec\nfrom tfddn.beam_like import x\nimport beamer\n")
    found = [m for _, m in _imported_modules(ast.parse(source)) if _forbidden(m)]
    assert found == ["serving.client", "beam.preprocess", "beam.values",
                     "serving.server.ServerHandle", "apache_beam"]


def test_the_wiring_modules_exist_and_are_the_only_exceptions():
    assert (PACKAGE / "cli").is_dir() and (PACKAGE / "demo.py").is_file()
    modules = _library_modules()
    assert "tfddn/spec.py" in modules and "tfddn/demo.py" not in modules
    assert not [m for m in modules if m.startswith("tfddn/cli/")]


def test_library_modules_import_neither_beam_nor_serving():
    offending, used = [], set()
    for module in _library_modules():
        tree = ast.parse((ROOT / module).read_text(), filename=module)
        for line, name in _imported_modules(tree):
            if _forbidden(name) and name in ALLOWED.get(module, ()):
                used.add((module, name))
            elif _forbidden(name):
                offending.append(f"{module}:{line} imports {name}")
    assert offending == []
    stale = {(m, n) for m, names in ALLOWED.items() for n in names} - used
    assert not stale, f"fixed: remove from ALLOWED {sorted(stale)}"

"""The build under test is the one the run says it is.

`make test-compiled` sets SLUICE_COMPILED=1 and puts the compiled package first on the
path; `make test-pure` sets SLUICE_COMPILED=0 and runs the sources. A compiled build
that silently fell back to the Python sources (a failed C compile, a wrong path) would
pass every other test while measuring nothing of what it ships, so this one fails.
"""

from __future__ import annotations

import ast
import importlib
import os
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "setup.py"
BUILD = os.environ.get("SLUICE_COMPILED", "")


def compiled_modules() -> list[str]:
    """The module names setup.py compiles (its COMPILED list, read without running it)."""
    for node in ast.parse(SETUP.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            paths = ast.literal_eval(node.value)
            return ["sluice." + path.removesuffix(".py").replace("/", ".") for path in paths]
    raise AssertionError("setup.py has no COMPILED list")


def test_the_list_names_real_modules() -> None:
    names = compiled_modules()
    assert "sluice.wire.pg.responses" in names and "sluice.wire.mysql.replies" in names
    for name in names:
        importlib.import_module(name)


@pytest.mark.skipif(BUILD not in ("0", "1"), reason="SLUICE_COMPILED not set (make test does)")
@pytest.mark.parametrize("name", compiled_modules())
def test_module_is_of_the_build_under_test(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    if BUILD == "1":
        assert not module.__file__.endswith(".py"), f"{name} is not compiled: {module.__file__}"
    else:
        assert module.__file__.endswith(".py"), f"{name} is not the source: {module.__file__}"


@pytest.mark.skipif(BUILD not in ("0", "1"), reason="SLUICE_COMPILED not set (make test does)")
def test_socket_calls_are_of_the_build_under_test() -> None:
    """The compiled build makes the data plane's socket calls in C (`net/_sockio.c`)."""
    from sluice.net import sockio

    kinds = {type(call).__name__ for call in (sockio.recv, sockio.send, sockio.poll)}
    assert kinds == ({"builtin_function_or_method"} if BUILD == "1" else {"function"})


def _unbound_names(tree: ast.Module) -> list[str]:
    """Top-level bindings of a module that compiled code would read from the module's dict."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign):
            annotation = ast.unparse(node.annotation)
            if not annotation.startswith(("Final", "TypeAlias")):
                found.append(f"line {node.lineno}: {ast.unparse(node.target)}: {annotation}")
        elif isinstance(node, ast.Assign):
            value = node.value
            is_typevar = isinstance(value, ast.Call) and ast.unparse(value.func) == "TypeVar"
            if not is_typevar:
                found.append(f"line {node.lineno}: {ast.unparse(node.targets[0])} = ...")
        elif isinstance(node, ast.AugAssign):
            found.append(f"line {node.lineno}: {ast.unparse(node.target)} augmented")
    return found


@pytest.mark.parametrize("name", compiled_modules())
def test_module_level_names_are_final(name: str) -> None:
    """A compiled function reads a module-level name that is not `Final` from the module's
    dict at every use (a hash lookup of a few hundred instructions); a `Final` one is a C
    static. So every name a compiled module binds at its top level is `Final` (constants,
    tables, loggers, imported functions called on the relay path such as `monotonic`), a
    `TypeAlias` or a `TypeVar`."""
    path = SETUP.parent / "src" / (name.replace(".", "/") + ".py")
    assert _unbound_names(ast.parse(path.read_text())) == []


def test_the_final_names_check_finds_plain_bindings() -> None:
    source = "A = 1\nB: int = 2\nC: Final = 3\nT = TypeVar('T')\nD: TypeAlias = int\nC += 1"
    tree = ast.parse(source)
    assert [entry.split(":")[0] for entry in _unbound_names(tree)] == [
        "line 1",
        "line 2",
        "line 6",
    ]

"""The wire layer is sans-IO: no module under sluice/wire touches sockets or an event loop.

Read from the source with `ast`, so an import inside a function or behind
TYPE_CHECKING counts too, and followed through the sluice modules the wire
layer imports (importing `sluice.errors` must not drag asyncio in either).
"""

from __future__ import annotations

from pathlib import Path

from sources import SRC, imported_names, module_path

FORBIDDEN = frozenset({"asyncio", "socket", "ssl", "selectors"})
WIRE = SRC / "wire"


def _reachable(start: list[Path]) -> dict[Path, set[str]]:
    """Every sluice module reachable from `start` by imports, with its imports."""
    seen: dict[Path, set[str]] = {}
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path] = imported_names(path)
        for name in seen[path]:
            target = module_path(name)
            if target is not None and target not in seen:
                todo.append(target)
    return seen


def test_wire_modules_found() -> None:
    found = {p.name for p in WIRE.rglob("*.py")}
    assert {"messages.py", "framing.py", "responses.py", "sql.py", "scram.py"} <= found


def test_no_io_imports_in_wire() -> None:
    offenders = {}
    for path, names in _reachable(sorted(WIRE.rglob("*.py"))).items():
        bad = {n for n in names if n.split(".")[0] in FORBIDDEN}
        if bad:
            offenders[str(path.relative_to(SRC))] = sorted(bad)
    assert offenders == {}


def test_checker_sees_ioimported_names(tmp_path: Path) -> None:
    """The checker itself: every import form it must catch (so the test above can fail)."""
    sample = SRC / "wire" / "pg" / "messages.py"
    assert "struct" in imported_names(sample)
    fake = tmp_path / "sluice" / "wire" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        "import socket\n"
        "from asyncio import Protocol\n"
        "import ssl as tls\n"
        "def f():\n    import selectors\n"
        "from . import y\n"
    )
    names = imported_names(fake, tmp_path / "sluice")
    assert {"socket", "asyncio", "ssl", "selectors", "sluice.wire", "sluice.wire.y"} <= names


# The control plane's pure layers: wire formats, signatures, policies and security-group rules.
CONTROL_PURE = [
    SRC / "control" / "protocol" / "__init__.py",
    SRC / "control" / "protocol" / "query.py",
    SRC / "control" / "protocol" / "ec2.py",
    SRC / "control" / "protocol" / "jsonproto.py",
    SRC / "control" / "sigv4.py",
    SRC / "control" / "sigv4_canonical.py",
    SRC / "control" / "policy.py",
    SRC / "control" / "conditions.py",
    SRC / "control" / "sgrules.py",
]


def test_no_io_imports_in_the_control_planes_codecs() -> None:
    assert all(p.is_file() for p in CONTROL_PURE)
    offenders = {}
    for path, names in _reachable(CONTROL_PURE).items():
        bad = {n for n in names if n.split(".")[0] in FORBIDDEN | {"aiohttp", "sqlite3"}}
        if bad:
            offenders[str(path.relative_to(SRC))] = sorted(bad)
    assert offenders == {}

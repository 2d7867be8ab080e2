"""The layers below the program never reach up: what each may import, read from the source.

The shared session layer, the pool, the readers (metrics, admin console) and
the proxy base know neither `App` nor an engine: they are handed narrow
services and read sessions through protocols (`sluice.session.services`,
`sluice.session.views`). The engines know no `App` either. Inside an engine,
the login, the pool and the statement helpers see the client session through
protocols, not the session class. Imports behind TYPE_CHECKING count: a
type-only import still ties the files into one circle.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sources import SRC, imported_names

PROGRAM = ("sluice.app", "sluice.cli", "sluice.control")
ENGINES = ("sluice.pg", "sluice.mysql")
NET = "sluice.net"


def _imports(path: Path, src: Path = SRC) -> set[str]:
    """Names of the sluice modules (and their members) `path` imports."""
    return {n for n in imported_names(path, src) if n.startswith("sluice")}


def _files(*places: str) -> list[Path]:
    paths: list[Path] = []
    for place in places:
        path = SRC / place
        paths += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    assert all(p.is_file() for p in paths) and paths
    return paths


def _offenders(
    paths: list[Path], forbidden: tuple[str, ...], src: Path = SRC
) -> dict[str, list[str]]:
    found = {}
    for path in paths:
        bad = sorted(n for n in _imports(path, src) if n.startswith(forbidden))
        if bad:
            found[str(path.relative_to(src))] = bad
    return found


@pytest.mark.parametrize(
    "places",
    [("session", "pool", "auth", "wire"), ("observe",), ("proxy.py",)],
    ids=["session-pool-auth-wire", "observe", "proxy"],
)
def test_lower_layers_know_no_program_and_no_engine(places: tuple[str, ...]) -> None:
    assert _offenders(_files(*places), PROGRAM + ENGINES) == {}


def test_sockets_know_nothing_above_them() -> None:
    """`sluice.net` reads and writes sockets for whoever is its protocol: it imports no
    other part of the proxy."""
    outside = {str(p.relative_to(SRC)): sorted(n for n in _imports(p) if not n.startswith(NET))
               for p in _files("net")}  # fmt: skip
    assert {path: names for path, names in outside.items() if names} == {}


def test_engines_know_no_program() -> None:
    assert _offenders(_files("pg", "mysql"), PROGRAM) == {}


@pytest.mark.parametrize(
    ("helpers", "session"),
    [
        (("mysql/login.py", "mysql/pool.py", "mysql/prepared.py", "mysql/results.py",
          "mysql/server.py"), ("sluice.mysql.client", "sluice.mysql.proxy")),
        (("pg/pgpool.py", "pg/auth.py", "pg/statements.py", "pg/handshake.py",
          "pg/server.py", "pg/guard.py", "pg/startup.py", "pg/admin.py"),
         ("sluice.pg.client", "sluice.pg.proxy")),
        (("pg/guard.py",), ("sluice.pg.server",)),
    ],
    ids=["mysql", "pg", "pg-guard"],
)  # fmt: skip
def test_engine_helpers_see_the_session_through_protocols(
    helpers: tuple[str, ...], session: tuple[str, ...]
) -> None:
    assert _offenders(_files(*helpers), session) == {}


def _circle(paths: list[Path], src: Path = SRC) -> list[str]:
    """Files of `paths` that import each other round in a circle (first one found)."""
    modules = {".".join(p.relative_to(src.parent).with_suffix("").parts): p for p in paths}
    edges = {m: sorted(n for n in _imports(p, src) if n in modules and n != m)
             for m, p in modules.items()}  # fmt: skip
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> list[str]:
        if module in trail:
            return trail[trail.index(module) :]
        if module in done:
            return []
        for name in edges[module]:
            if found := visit(name, [*trail, module]):
                return found
        done.add(module)
        return []

    for module in sorted(modules):
        if found := visit(module, []):
            return found
    return []


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_no_import_circle_inside_an_engine(engine: str) -> None:
    """The session imports its helpers; none of them imports it back, even for types."""
    assert _circle(_files(engine)) == []


def test_no_import_circle_inside_the_control_plane() -> None:
    """`ControlPlane` builds the services, the runtime, the authority and the API server;
    none of them imports it back: each is handed the narrow part it reads (a Protocol)."""
    assert _circle(_files("control")) == []


def test_checker_sees_type_only_and_relative_imports(tmp_path: Path) -> None:
    """The checker itself, so the tests above can fail."""
    assert "sluice.app" in _imports(SRC / "cli.py")
    src = tmp_path / "sluice"
    fake = src / "session" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from sluice.app import App\n"
        "from ..pg import client\n"
    )
    assert {"sluice.app", "sluice.pg"} <= _imports(fake, src)
    assert _offenders([fake], PROGRAM + ENGINES, src) == {
        "session/x.py": ["sluice.app", "sluice.app.App", "sluice.pg", "sluice.pg.client"]
    }
    other = src / "session" / "y.py"
    other.write_text("if False:\n    from sluice.session.x import z\n")
    fake.write_text("from sluice.session import y\nfrom sluice.session.y import w\n")
    assert _circle([fake, other], src) == ["sluice.session.x", "sluice.session.y"]

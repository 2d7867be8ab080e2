"""Build: the relay's per-message modules compiled with mypyc (docs/performance.md).

The Python sources stay the source of truth: mypyc compiles the same typed modules
to C extensions, which the machine's C compiler builds. Compiled are the modules a
lent connection runs for every message, for both engines: the wire layer (framing,
reply tracking, SQL effect classification, and the wire modules they import), the
client and server sessions, which are the event loop's protocols themselves, the
state they keep per client (settings, prepared statements, the borrow guard, MySQL's
results of earlier statements), the pools and the latency histograms. Their classes
become native (C structs, methods called directly): no class defined elsewhere may
derive from them.

Nothing is compiled when

- `SLUICE_PURE=1` is set (the interpreted build, e.g. to compare the two),
- the machine has no C compiler (a warning says so; the sources then run as they are), or
- the install is editable (`pip install -e .`): the sources under src/ then run as
  they are, so an edited module is never shadowed by a stale extension next to it.
  `make test` builds the compiled package into its own directory and runs the tests
  against it (see the Makefile), or
- setuptools is only asked for the package's metadata or build requirements (`egg_info`,
  `dist_info`), which need no extension: mypyc's type check runs once, for the build.

Beside them, two small C modules: the data plane's socket calls (`sluice.net._sockio`,
made holding the interpreter's lock; `sluice/net/sockio.py` does the same through the
standard library where it is not built), and the SQL pre-check's word search
(`sluice.wire._anchors`, the loop of `wire/anchors.py`, which calls it when built).

The small C library preloaded into Lambda function environments is not a module: it is
built wherever a C compiler is found, editable installs included (`preloaded_library`).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig

from setuptools import Extension, setup

COMPILED = [
    "wire/anchors.py",
    "wire/pg/calls.py",
    "wire/pg/framing.py",
    "wire/pg/messages.py",
    "wire/pg/responses.py",
    "wire/pg/sql.py",
    "wire/mysql/commands.py",
    "wire/mysql/constants.py",
    "wire/mysql/handshake.py",
    "wire/mysql/messages.py",
    "wire/mysql/packets.py",
    "wire/mysql/replies.py",
    "wire/mysql/sql.py",
    "session/backend.py",
    "session/frontend.py",
    "session/pooling.py",
    "pool/budget.py",
    "pool/pool.py",
    "observe/histogram.py",
    "net/clock.py",
    "net/transport.py",
    "pg/client.py",
    "pg/guard.py",
    "pg/pgpool.py",
    "pg/server.py",
    "pg/settings.py",
    "pg/statements.py",
    "mysql/client.py",
    "mysql/pool.py",
    "mysql/prepared.py",
    "mysql/results.py",
    "mysql/server.py",
    "mysql/statements.py",
]


def compiled_modules() -> list[object]:
    if os.environ.get("SLUICE_PURE", "") not in ("", "0"):
        return []
    if {"editable_wheel", "develop", "egg_info", "dist_info"} & set(sys.argv):
        return []
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if shutil.which(compiler.split()[0]) is None:
        print(f"warning: no C compiler ({compiler}): Sluice runs interpreted", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    loops = [  # (-O3: the byte loops are vectorised)
        Extension(name, [source], extra_compile_args=["-O3"])
        for name, source in (
            ("sluice.net._sockio", "src/sluice/net/_sockio.c"),  # (net/sockio.py)
            ("sluice.wire._anchors", "src/sluice/wire/_anchors.c"),  # (wire/anchors.py)
        )
    ]
    compiled = mypycify(
        [os.path.join("src", "sluice", path) for path in COMPILED],
        opt_level="3",
        group_name="sluice_compiled",
    )
    return [*compiled, *loops] if sys.platform.startswith("linux") else list(compiled)


def preloaded_library() -> list[Extension]:
    """The library preloaded into function environments (src/sluice/functions/source_address.c):
    built for editable installs too, and with SLUICE_PURE=1; where it cannot be built, the
    install goes on without it and the runtime binds connections through Python's socket module
    only (docs/control-plane.md, "Network identity")."""
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if not sys.platform.startswith("linux") or shutil.which(compiler.split()[0]) is None:
        return []
    return [
        Extension(
            "sluice.functions._source_address",
            ["src/sluice/functions/source_address.c"],
            libraries=["dl"],
            extra_compile_args=["-fvisibility=hidden"],
            optional=True,
        )
    ]


setup(ext_modules=[*compiled_modules(), *preloaded_library()])

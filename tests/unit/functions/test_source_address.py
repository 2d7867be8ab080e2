"""An environment's TCP connections to this host leave from its source address.

Real `bootstrap.py` processes (through the runner) connect to a listener of the test in the
ways client libraries do: through Python's socket module, and from C (the C library's connect()
called as a C program calls it, libpq under psycopg, a program the handler starts). The
listener sees where each connection came from and closes it at once.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import socket
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from sluice.functions.package import PackageStore
from sluice.functions.runner import Runner
from sluice.functions.sandbox import Sandbox, source_address_library
from sluice.functions.spec import FunctionSpec, RunnerSettings, TemporaryCredentials

CODE = """
import asyncio, ctypes, errno, socket, ssl, struct, subprocess, sys

def c_connect(family, host, port, kind=socket.SOCK_STREAM, prepare=None):
    # connect() looked up as a C program linked against the C library finds it
    libc = ctypes.CDLL(None, use_errno=True)
    conn = socket.socket(family, kind)
    if prepare:
        prepare(conn)
    packed = socket.inet_pton(family, host)
    if family == socket.AF_INET:
        address = struct.pack("=H", family) + struct.pack("!H", port) + packed + bytes(8)
    else:
        address = struct.pack("=H", family) + struct.pack("!HI", port, 0) + packed + bytes(4)
    if libc.connect(conn.fileno(), address, len(address)) != 0:
        raise OSError(ctypes.get_errno(), "connect")
    return conn

def no_port_yet(conn):  # bound to an address, its port left for connect() to choose
    conn.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
    conn.bind(("127.0.0.9", 0))

def handler(event, context):
    port, how = event["port"], event["how"]
    try:
        if how == "create_connection":
            conn = socket.create_connection(("localhost", port))
        elif how == "connect_ex":
            conn = socket.socket()
            failed = conn.connect_ex(("127.0.0.1", port))
            if failed:
                raise OSError(failed, "connect_ex")
        elif how == "ssl":  # an SSLSocket connects through the same methods (no handshake here)
            ctx = ssl.create_default_context()
            conn = ctx.wrap_socket(socket.socket(), server_hostname="x",
                                   do_handshake_on_connect=False)
            conn.connect(("127.0.0.1", port))
        elif how == "bound":  # a handler that binds on purpose keeps its address
            conn = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.9", 0))
        elif how == "asyncio":
            async def run():
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                where = writer.get_extra_info("sockname")[0]
                writer.close()
                return where
            return asyncio.run(run())
        elif how == "libc":
            conn = c_connect(socket.AF_INET, "127.0.0.1", port)
        elif how == "libc-mapped":  # IPv4 reached through an IPv6 socket
            conn = c_connect(socket.AF_INET6, "::ffff:127.0.0.1", port)
        elif how == "libc-bound-no-port":
            conn = c_connect(socket.AF_INET, "127.0.0.1", port, prepare=no_port_yet)
        elif how == "libc-udp":
            conn = c_connect(socket.AF_INET, "127.0.0.1", port, kind=socket.SOCK_DGRAM)
        elif how == "subprocess":  # a program the handler starts (no wrapper of bootstrap.py)
            script = ("import socket; c = socket.create_connection(('127.0.0.1', %d)); "
                      "print(c.getsockname()[0])" % port)
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                 check=True).stdout
            return out.strip()
        elif how == "psycopg":  # libpq connects from C; the listener hangs up
            import psycopg
            try:
                psycopg.connect(host="127.0.0.1", port=port, sslmode="disable",
                                gssencmode="disable", connect_timeout=5).close()
            except psycopg.OperationalError:
                return None
            return "answered"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    where = conn.getsockname()[0]
    conn.close()
    return where
"""


class Keys:
    def credentials(self, role_arn: str, session_name: str) -> TemporaryCredentials:
        return TemporaryCredentials("ASIAKEY", "secret", "token", time.time() + 3600)


class Listener:
    """A TCP listener on 127.0.0.1 that notes where each connection came from and hangs up."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self._peers: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                peer, (address, port) = self.socket.accept()
            except OSError:
                return  # closed: the test is over
            self._peers.append((address, port))
            peer.close()

    def taken(self) -> list[str]:
        """Where the connections made since the last call came from: the test connects once
        more itself, and the connections accepted before that one (the queue is in order)
        are the handler's."""
        with socket.create_connection(("127.0.0.1", self.port)) as marker:
            mark = marker.getsockname()
            deadline = time.monotonic() + 10
            while mark not in self._peers and time.monotonic() < deadline:
                time.sleep(0.005)
        before = self._peers.index(mark)
        taken, self._peers = self._peers[:before], self._peers[before + 1 :]
        return [address for address, _ in taken]

    def close(self) -> None:
        self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()
        self._thread.join(5)


def _psycopg_layer(root: Path) -> Path:
    """A layer holding psycopg and its compiled libpq, as `pip install --target python
    "psycopg[binary]"` lays it out (environments import nothing else of this Python's)."""
    import psycopg

    site, layer = Path(psycopg.__file__).parent.parent, root / "psycopg-layer"
    if not layer.is_dir():
        for name in ("psycopg", "psycopg_binary", "psycopg_binary.libs"):
            shutil.copytree(site / name, layer / "python" / name,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        shutil.copy2(site / "typing_extensions.py", layer / "python")
    return layer


def _spec(root: Path, source: str) -> FunctionSpec:
    store = PackageStore(root)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", CODE)
    package = store.add(buffer.getvalue())
    return FunctionSpec(
        name="fn", arn="arn:aws:lambda:us-east-1:123456789012:function:fn", handler="app.handler",
        runtime="python3.11", role_arn="arn:aws:iam::123456789012:role/r", timeout=10.0,
        memory_mb=256, revision="r1", task_root=store.unpacked(package.hex_digest),
        layer_paths=(_psycopg_layer(root),), source_address=source,
    )  # fmt: skip


def _run(root: Path, source: str, ways: list[str],
         sandbox: Sandbox | None = None) -> dict[str, tuple[object, list[str]]]:  # fmt: skip
    """For each way: what the handler answered, and where the listener saw it come from."""
    settings = RunnerSettings(root=root, region="us-east-1", endpoint_url="http://127.0.0.1:1",
                              python=sys.executable)  # fmt: skip
    spec = _spec(root, source)

    async def main() -> dict[str, tuple[object, list[str]]]:
        runner = Runner(settings, Keys(), sandbox)
        listener = Listener()
        seen: dict[str, tuple[object, list[str]]] = {}
        try:
            for how in ways:
                event = json.dumps({"port": listener.port, "how": how}).encode()
                outcome = await runner.invoke(spec, f"rid-{how}", event)
                assert outcome.error is None, outcome.payload
                seen[how] = json.loads(outcome.payload), listener.taken()
        finally:
            listener.close()
            await runner.stop()
        return seen

    return asyncio.run(main())


def _sources(root: Path, source: str, ways: list[str],
             sandbox: Sandbox | None = None) -> dict[str, str]:  # fmt: skip
    """Where each way's connection came from (the handler saw the same address)."""
    seen = {}
    for how, (answer, peers) in _run(root, source, ways, sandbox).items():
        assert len(peers) == 1, (how, answer, peers)
        assert answer in (peers[0], None), (how, answer, peers)  # psycopg says None
        seen[how] = peers[0]
    return seen


PYTHON_WAYS = ["create_connection", "connect_ex", "ssl", "asyncio"]
C_WAYS = ["libc", "psycopg", "subprocess"]


@pytest.fixture(autouse=True)
def _library_built() -> None:
    assert source_address_library() is not None, (
        "the library preloaded into function environments is built by `pip install .` "
        "or `pip install -e .` (setup.py), which needs a C compiler"
    )


def test_connections_leave_from_the_source_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sluice.functions")
    ways = [*PYTHON_WAYS, *C_WAYS, "bound"]
    assert _sources(tmp_path, "127.20.0.4", ways) == {
        **{how: "127.20.0.4" for how in PYTHON_WAYS + C_WAYS},
        "bound": "127.0.0.9",
    }
    messages = [r.getMessage() for r in caplog.records]
    found = f"to the source address by the preloaded library {source_address_library()}"
    assert any(m.endswith(found) for m in messages), messages  # what the runner found
    started = [m for m in messages if "started" in m]  # what the environment did
    assert started and started[0].endswith(
        "(connects from 127.20.0.4, bound by the preloaded library)"
    ), started


def test_ipv4_mapped_and_the_sockets_left_alone(tmp_path: Path) -> None:
    seen = _run(tmp_path, "127.20.0.4", ["libc-mapped", "libc-bound-no-port", "libc-udp"])
    assert seen["libc-mapped"] == ("::ffff:127.20.0.4", ["127.20.0.4"])
    assert seen["libc-bound-no-port"] == ("127.0.0.9", ["127.0.0.9"])  # its own address kept
    assert seen["libc-udp"] == ("127.0.0.1", [])  # datagrams are not bound


def test_a_connection_that_cannot_be_bound_is_never_made(tmp_path: Path) -> None:
    """An address this host does not have: connect() fails as the bind did, from C and Python."""
    seen = _run(tmp_path, "192.0.2.1", ["libc", "connect_ex", "create_connection", "psycopg"])
    assert seen == {
        "libc": ("EADDRNOTAVAIL", []), "connect_ex": ("EADDRNOTAVAIL", []),
        "create_connection": ("EADDRNOTAVAIL", []), "psycopg": (None, []),
    }  # fmt: skip


def test_without_a_source_address_nothing_is_bound(tmp_path: Path) -> None:
    assert _sources(tmp_path, "", ["create_connection", "libc"]) == {
        "create_connection": "127.0.0.1",
        "libc": "127.0.0.1",
    }


def test_without_the_library_python_connections_are_still_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The fallback on a host where the library was not built: the socket module is wrapped;
    a connection from C is not bound (which is what the library is for)."""
    caplog.set_level(logging.INFO, "sluice.functions")
    bare = Sandbox(tmp_path / "opt")  # no library to preload
    ways = ["create_connection", "asyncio", "libc", "subprocess"]
    assert _sources(tmp_path, "127.20.0.4", ways, bare) == {
        "create_connection": "127.20.0.4",
        "asyncio": "127.20.0.4",
        "libc": "127.0.0.1",
        "subprocess": "127.0.0.1",
    }
    assert any(r.getMessage().endswith("bound by the Python socket module)")
               for r in caplog.records)  # fmt: skip


def test_a_library_that_does_not_load_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = Sandbox(tmp_path / "opt", preload=tmp_path / "gone.so")
    assert _sources(tmp_path, "127.20.0.4", ["connect_ex"], missing) == {"connect_ex": "127.20.0.4"}
    assert any("did not load" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)  # fmt: skip

"""An environment's TCP connections to this host leave from its source address.

Real `bootstrap.py` processes (through the runner) connect to a listener of the test in the
ways client libraries do; the listener sees where each connection came from.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
import time
import zipfile
from pathlib import Path

from sluice.functions.package import PackageStore
from sluice.functions.runner import Runner
from sluice.functions.spec import FunctionSpec, RunnerSettings, TemporaryCredentials

CODE = """
import asyncio, socket, ssl

def handler(event, context):
    port, how = event["port"], event["how"]
    if how == "create_connection":
        conn = socket.create_connection(("localhost", port))
    elif how == "connect_ex":
        conn = socket.socket()
        assert conn.connect_ex(("127.0.0.1", port)) == 0
    elif how == "ssl":  # an SSLSocket connects through the same methods (no handshake here)
        ctx = ssl.create_default_context()
        conn = ctx.wrap_socket(socket.socket(), server_hostname="x", do_handshake_on_connect=False)
        conn.connect(("127.0.0.1", port))
    elif how == "bound":  # a handler that binds on purpose keeps its address
        conn = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.9", 0))
    else:
        async def run():
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            where = writer.get_extra_info("sockname")[0]
            writer.close()
            return where
        return asyncio.run(run())
    where = conn.getsockname()[0]
    conn.close()
    return where
"""


class Keys:
    def credentials(self, role_arn: str, session_name: str) -> TemporaryCredentials:
        return TemporaryCredentials("ASIAKEY", "secret", "token", time.time() + 3600)


def _spec(root: Path, source: str) -> FunctionSpec:
    store = PackageStore(root)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", CODE)
    package = store.add(buffer.getvalue())
    return FunctionSpec(
        name="fn", arn="arn:aws:lambda:us-east-1:123456789012:function:fn", handler="app.handler",
        runtime="python3.11", role_arn="arn:aws:iam::123456789012:role/r", timeout=5.0,
        memory_mb=256, revision="r1", task_root=store.unpacked(package.hex_digest),
        source_address=source,
    )  # fmt: skip


def _sources(root: Path, source: str, ways: list[str]) -> dict[str, str]:
    settings = RunnerSettings(root=root, region="us-east-1", endpoint_url="http://127.0.0.1:1",
                              python=sys.executable)  # fmt: skip
    spec = _spec(root, source)

    async def main() -> dict[str, str]:
        runner = Runner(settings, Keys())
        seen = {}
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            try:
                for how in ways:
                    event = json.dumps({"port": port, "how": how}).encode()
                    outcome = await runner.invoke(spec, f"rid-{how}", event)
                    assert outcome.error is None, outcome.payload
                    peer, (address, _) = listener.accept()
                    peer.close()
                    assert json.loads(outcome.payload) == address
                    seen[how] = address
            finally:
                await runner.stop()
        return seen

    return asyncio.run(main())


def test_connections_leave_from_the_source_address(tmp_path: Path) -> None:
    ways = ["create_connection", "connect_ex", "ssl", "asyncio", "bound"]
    assert _sources(tmp_path, "127.20.0.4", ways) == {
        "create_connection": "127.20.0.4", "connect_ex": "127.20.0.4", "ssl": "127.20.0.4",
        "asyncio": "127.20.0.4", "bound": "127.0.0.9",
    }  # fmt: skip


def test_without_a_source_address_nothing_is_bound(tmp_path: Path) -> None:
    assert _sources(tmp_path, "", ["create_connection"]) == {"create_connection": "127.0.0.1"}

"""App.apply with `failed`: a listener that cannot open leaves the others alone (what the
control plane relies on to mark one proxy `incompatible-network` and run the rest)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from sluice.app import App
from sluice.config import PoolConfig, ProxyConfig, Settings, TargetConfig


def _proxy(name: str, port: int) -> ProxyConfig:
    return ProxyConfig(
        name=name, engine="postgresql", listen_host="127.0.0.1", listen_port=port,
        target=TargetConfig(port=1), pool=PoolConfig(), users=(),
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_listener_that_cannot_open_is_reported_and_the_rest_run(tmp_path: Path) -> None:
    async def scenario() -> None:
        app = App(Settings(proxies=(), state_dir=tmp_path))
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            free = _free_port()
            failed: dict[str, OSError] = {}
            settings = Settings(proxies=(_proxy("a", free), _proxy("b", taken)), state_dir=tmp_path)
            opened = await app.apply(settings, failed)
            assert opened == {"a"}
            assert set(failed) == {"b"} and isinstance(failed["b"], OSError)
            assert set(app.proxies) == {"a"}
            _, writer = await asyncio.open_connection("127.0.0.1", free)  # "a" listens
            writer.close()
        # the port is free again: the same snapshot now opens "b" too, "a" is left as it is
        running = app.proxies["a"]
        failed.clear()
        assert await app.apply(settings, failed) == {"b"}
        assert not failed and app.proxies["a"] is running
        await app.shutdown()

    asyncio.run(scenario())


def test_without_failed_the_first_error_is_raised_and_nothing_changes(tmp_path: Path) -> None:
    async def scenario() -> None:
        app = App(Settings(proxies=(), state_dir=tmp_path))
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            settings = Settings(
                proxies=(_proxy("a", _free_port()), _proxy("b", squatter.getsockname()[1])),
                state_dir=tmp_path,
            )
            try:
                await app.apply(settings)
            except OSError:
                pass
            else:
                raise AssertionError("apply did not raise")
        assert app.proxies == {}
        await app.shutdown()

    asyncio.run(scenario())

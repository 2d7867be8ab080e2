"""Command line: `sluice proxy --config FILE`, `sluice server`, `sluice db-instance`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from sluice import config as config_mod
from sluice.app import App
from sluice.control import cli as control_cli
from sluice.errors import ConfigError
from sluice.observe.logs import setup_logging
from sluice.workers.slot import DEFAULT_SLOT, WorkerSlot
from sluice.workers.supervisor import Supervisor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy", help="run the proxies a TOML file declares")
    proxy.add_argument("--config", "-c", required=True, help="path to the TOML configuration")
    control_cli.add_commands(sub)
    args = parser.parse_args(argv)
    if args.command == "server":
        return control_cli.run_server(args)
    if args.command == "db-instance":
        return control_cli.run_db_instance(args)
    try:
        settings = config_mod.load(args.config)
    except ConfigError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        return Supervisor(settings, run).run()
    return run(settings)


def run(
    settings: config_mod.Settings,
    slot: WorkerSlot = DEFAULT_SLOT,
    ready: Callable[[], None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the configuration file. `slot`: this
    process's place among the workers; `ready` is called once it listens."""
    import uvloop

    try:
        uvloop.run(_serve(settings, slot, ready))
    except ConfigError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(
    settings: config_mod.Settings, slot: WorkerSlot, ready: Callable[[], None] | None
) -> None:
    app = App(settings, slot=slot)
    await app.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    log = logging.getLogger("sluice")

    def reload() -> None:
        async def do() -> None:
            try:
                await app.reload()
            except (ConfigError, OSError) as exc:
                log.error("reload failed, keeping the running configuration: %s", exc)

        app.spawn(do())

    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if slot.single:
        log.info("sluice ready")
    else:
        log.info("worker %d of %d ready", slot.index, slot.count)
    if ready is not None:
        ready()
    await stop.wait()
    await app.shutdown()

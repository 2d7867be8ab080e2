"""Admin console (being written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.errors import UnknownDatabase

if TYPE_CHECKING:
    from sluice.app import App
    from sluice.pg.client import ClientSession


class AdminConsole:
    def __init__(self, app: App) -> None:
        self.app = app

    async def serve(self, client: ClientSession) -> None:
        raise UnknownDatabase("admin console not available yet")

"""Metrics endpoint (being written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluice.app import App


class MetricsServer:
    def __init__(self, app: App) -> None:
        self.app = app

    async def start(self, listen: str) -> None:
        return None

    async def stop(self) -> None:
        return None

"""A cancel stops the statement it was sent for, never the client's next one.

asyncpg times a statement out by sending a CancelRequest, then waits for two
things before its next statement: the cancelled statement's reply, and the
cancel connection being closed. The server closes that connection only once it
has signalled the backend, so directly the signal can never reach the next
statement. Through Sluice the client's cancel connection must stay open until
the server has closed the one Sluice made, and a cancel must not be forwarded
once the client's statement has finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from helpers import APP_DB, APP_PASSWORD, APP_USER
from sluice.devtools.runner import SluiceProcess

pytestmark = pytest.mark.timeout(180)

StartSluice = Callable[..., SluiceProcess]
ROUNDS = 40


def _port(proc: SluiceProcess) -> int:
    return int(str(proc.proxies[0]["listen"]).rpartition(":")[2])


async def _timeouts_then_select(port: int) -> list[str]:
    """Time out a long statement, then run a short one, ROUNDS times; the short ones'
    failures."""
    con = await asyncpg.connect(
        host="127.0.0.1",
        port=port,
        user=APP_USER,
        password=APP_PASSWORD,
        database=APP_DB,
        ssl=False,
        timeout=30,
    )
    sleep = await con.prepare("select pg_sleep(10)")
    failures = []
    for _ in range(ROUNDS):
        with pytest.raises(asyncio.TimeoutError):
            await sleep.fetch(timeout=0.02)
        try:
            assert await con.fetchval("select 1") == 1
        except asyncpg.PostgresError as exc:
            failures.append(exc.sqlstate)
    await con.close()
    return failures


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_cancel_never_reaches_the_next_statement(start_sluice: StartSluice, mode: str) -> None:
    proc = start_sluice(pool={"mode": mode, "max_connections": 2})
    assert asyncio.run(_timeouts_then_select(_port(proc))) == []

"""The process's file descriptor limit, raised at start to what the configuration needs.

Every client and every database connection is a file descriptor. A process
that has run out of them accepts nobody (every listener's accept() fails)
until someone leaves: that is how a flood of stalled logins used to lock out
every client of every proxy. At start and on every reload, Sluice raises its
own soft RLIMIT_NOFILE to what the configuration needs (each proxy's
`max_client_connections` and pool, and a reserve), as far as the hard limit
allows, and warns when that is not enough. `client_capacity` is then how many
clients all proxies together may hold: one more is refused with "too many
clients", never left to fail in accept().
"""

from __future__ import annotations

import logging
import resource

from sluice.config import Settings

log = logging.getLogger("sluice")

RESERVE = 256  # listeners, logs, the metrics endpoint, cancel requests, connections opening


def server_need(settings: Settings) -> int:
    """Descriptors the pools may use (a percent limit counted against 100 connections)."""
    return sum(p.pool.max_connections.resolve(None) for p in settings.proxies)


def client_need(settings: Settings) -> int:
    return sum(p.max_client_connections for p in settings.proxies)


def raise_limit(settings: Settings) -> int:
    """Raise the soft limit toward what `settings` needs; return how many clients fit."""
    servers = server_need(settings) + RESERVE
    wanted = client_need(settings) + servers
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit from %d to %d: %s", soft, target, exc)
    if soft == resource.RLIM_INFINITY:
        return client_need(settings)
    if soft < wanted:
        log.warning(
            "the open file limit (%d, hard limit %s) is below what the configuration needs "
            "(%d: max_client_connections of every proxy, their pools and %d more): about %d "
            "clients fit, more are refused with 'too many clients'",
            soft, "unlimited" if hard == resource.RLIM_INFINITY else hard, wanted, RESERVE,
            max(soft - servers, 0),
        )  # fmt: skip
    return max(soft - servers, 1)

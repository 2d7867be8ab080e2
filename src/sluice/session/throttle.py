"""Failed logins, counted per client address and per user, and what they cost the next try.

Without this, anyone who reaches a listener may try passwords as fast as the
proxy answers: hundreds a second. Each failed login adds a point to the score
of its client address and to that of its user name. Scores leak away, one
point every `FORGIVE` seconds, so a client that mistypes now and then never
notices any of this.

- An address whose score reaches `FREE` has its passwords checked one at a
  time, each after a pause that doubles with the score (up to `MAX_PAUSE`),
  however many connections it opens. When its score reaches the proxy's
  `auth_failure_limit`, the address is refused for `auth_block_time` seconds:
  at connect, and so are its logins still waiting for their turn.
- A user whose score reaches `FREE` has each *failed* login answered after the
  same pause. A correct password is never slowed or refused for its user's
  sake: else anyone who knows a user name could lock its owner out.

Sans-IO: every method takes the time and the caller does the waiting (an
`asyncio.sleep` in the login coroutine, which holds no pool connection yet and
blocks nothing). Each table keeps at most `MAX_ENTRIES` scores, the oldest
dropped first. A burst is logged when it blocks an address or slows a user
and once more when it is over, never once per failure, and never with what
the client sent as its password.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sluice.observe.logs import clip

log = logging.getLogger("sluice.auth")

FREE = 3  # failures a score may hold before anything slows down
FORGIVE = 10.0  # seconds for one failure to be forgotten
FIRST_PAUSE = 0.25  # seconds, at a score of FREE; doubles with each point above
MAX_PAUSE = 4.0
MAX_ENTRIES = 50_000  # per table: addresses, users


def pause(score: float) -> float:
    """The pause a score costs: none below FREE, then doubling up to MAX_PAUSE."""
    if score < FREE:
        return 0.0
    return min(FIRST_PAUSE * 2 ** (score - FREE), MAX_PAUSE)


@dataclass(slots=True)
class Score:
    """The failed logins of one address or user, leaking away with time."""

    value: float = 0.0
    at: float = 0.0  # when `value` was last brought up to date
    failures: int = 0  # in this burst (for the log)
    refused: int = 0  # connections refused in this burst (addresses)
    next_check: float = 0.0  # addresses: when their next password may be checked
    blocked_until: float = 0.0  # addresses: refused until then
    told: bool = False  # this burst was logged

    def current(self, now: float) -> float:
        return max(0.0, self.value - (now - self.at) / FORGIVE)

    def add(self, now: float) -> float:
        self.value = self.current(now) + 1.0
        self.at = now
        self.failures += 1
        return self.value

    def over(self, now: float) -> bool:
        """Forgotten: nothing left to count, nothing still refused or spaced."""
        return self.current(now) == 0.0 and max(self.blocked_until, self.next_check) <= now


class AuthThrottle:
    """The failed-login scores of one proxy's listener."""

    def __init__(self, proxy: str, limit: int = 10, block_time: float = 60.0) -> None:
        self.proxy = proxy
        self.limit = limit  # 0: no throttling at all
        self.block_time = block_time
        self.addresses: dict[str, Score] = {}
        self.users: dict[str, Score] = {}

    def configure(self, limit: int, block_time: float) -> None:
        self.limit, self.block_time = limit, block_time

    def blocked_for(self, address: str, now: float) -> float:
        """Seconds `address` stays refused, 0 if it is not; a refusal is counted."""
        score = self.addresses.get(address)
        if score is None or score.blocked_until <= now:
            return 0.0
        score.refused += 1
        return score.blocked_until - now

    def check_at(self, address: str, now: float) -> float:
        """When a password from `address` may be checked: now, or its turn after the
        pauses of those before it (the turn is taken: the next one waits longer)."""
        score = self.addresses.get(address)
        if score is None:
            return now
        wait = pause(score.current(now))
        if not wait:
            return now
        at = max(now, score.next_check)
        score.next_check = at + wait
        return at

    def failed(self, address: str, user: str, now: float) -> float:
        """Count a failed login; the pause before the client is told it failed."""
        if not self.limit:
            return 0.0
        where = self._entry(self.addresses, address)
        value = where.add(now)
        where.next_check = max(where.next_check, now + pause(value))
        if value >= self.limit and where.blocked_until <= now:
            where.blocked_until = now + self.block_time
            if not where.told:
                where.told = True
                log.warning(
                    "proxy %s: %d failed logins from %s (the last as user %s): refusing its "
                    "connections for %.0f s each time its score reaches %d",
                    self.proxy, where.failures, address, clip(user), self.block_time, self.limit,
                )  # fmt: skip
        who = self._entry(self.users, clip(user))
        wait = pause(who.add(now))
        if wait and not who.told:
            who.told = True
            log.warning(
                "proxy %s: %d failed logins for user %s: its failed logins are answered "
                "after a pause (a correct password is not slowed)", self.proxy, who.failures,
                clip(user),
            )  # fmt: skip
        return wait

    def maintain(self, now: float) -> None:
        """Forget the scores that leaked away; log the end of each burst that was logged."""
        for table, kind in ((self.addresses, "from"), (self.users, "for user")):
            for key, score in [(k, s) for k, s in table.items() if s.over(now)]:
                del table[key]
                if score.told:
                    refused = f", {score.refused} connections refused" if score.refused else ""
                    log.info(
                        "proxy %s: failed logins %s %s stopped (%d in all%s)",
                        self.proxy, kind, key, score.failures, refused,
                    )  # fmt: skip

    @staticmethod
    def _entry(table: dict[str, Score], key: str) -> Score:
        score = table.get(key)
        if score is None:
            if len(table) >= MAX_ENTRIES:
                del table[next(iter(table))]  # the oldest: a flood of new keys evicts its own
            score = table[key] = Score()
        return score

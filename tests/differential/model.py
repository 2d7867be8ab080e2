"""The schedule model: which steps can run at once, directly and through a small pool.

The executor runs one step at a time. A step that waited (for a pooled connection, a
row lock or an advisory lock) would stall the whole schedule, so the generator only
schedules steps this model admits, and a shrunken program is only run if every step
is still admitted. The model over-approximates: whatever it is unsure of, it assumes
holds (a connection, a lock, a transaction).

- A client *holds* a connection while it may be in a transaction or may be pinned
  (anything that pins or might: temporary objects, session locks, SET of other
  settings, opaque functions, ...) until it reconnects. A client that holds nothing
  runs a step only if fewer than `pool_size` other clients hold one.
- A table written in an open transaction belongs to that transaction: no other
  client writes it until the transaction ends (row and gap locks, unique checks).
- A blocking lock key (PostgreSQL `pg_advisory_lock`, `pg_advisory_xact_lock`, or a
  function that takes one) is only taken when no other client may hold it. Keys a
  client may hold when it disconnects are *tainted* for the rest of the program:
  the server releases them asynchronously, so no step touches them again.

Effects a step carries (strings, so a saved program keeps them):
`stmt` (a statement: opens a transaction when autocommit is off), `begin`, `end`,
`pin`, `write:T`, `lock:K`, `xlock:K` (blocking), `try:K`, `xtry:K` (may acquire),
`peek:K` (reads or releases), `autocommit:on|off`, `reset` (COM_RESET_CONNECTION),
`reconnect`, and `mark:X` / `needs:X`: a step that is only deterministic after another
of the same session (MariaDB's `FOUND_ROWS()` is whatever an earlier session on the
same server thread left, until this session has run a SELECT).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .program import Program, Step


@dataclass
class ClientModel:
    autocommit: bool
    initial_autocommit: bool
    in_txn: bool = False
    pinned: bool = False
    written: set[str] = field(default_factory=set)
    session_keys: set[str] = field(default_factory=set)
    xact_keys: set[str] = field(default_factory=set)
    marks: set[str] = field(default_factory=set)

    @property
    def holding(self) -> bool:
        return self.in_txn or self.pinned

    def held(self) -> set[str]:
        return self.session_keys | self.xact_keys

    def end_txn(self) -> None:
        self.in_txn = False
        self.written.clear()
        self.xact_keys.clear()


class PoolModel:
    """Tracks a program step by step; `admits` says whether a step can run without waiting."""

    def __init__(self, program: Program) -> None:
        self.pool_size = program.pool_size
        self.clients = [ClientModel(c.autocommit, c.autocommit) for c in program.clients]
        self.tainted: set[str] = set()

    def holding_others(self, client: int) -> int:
        return sum(1 for i, c in enumerate(self.clients) if i != client and c.holding)

    def can_start(self, client: int) -> bool:
        """Whether `client` can get a connection now (it holds one, or one is free)."""
        if self.clients[client].holding:
            return True
        return self.holding_others(client) < self.pool_size

    def admits(self, step: Step) -> bool:
        if not 0 <= step.client < len(self.clients) or not self.can_start(step.client):
            return False
        return all(self._effect_ok(step.client, effect) for effect in step.effects)

    def _effect_ok(self, client: int, effect: str) -> bool:
        kind, _, arg = effect.partition(":")
        others = [c for i, c in enumerate(self.clients) if i != client]
        if kind == "write":
            return not any(arg in c.written for c in others)
        if kind in ("lock", "xlock"):
            return arg not in self.tainted and not any(arg in c.held() for c in others)
        if kind in ("try", "xtry", "peek"):
            return arg not in self.tainted
        if kind == "needs":
            return arg in self.clients[client].marks
        return True

    def apply(self, step: Step) -> None:
        """Record what `step` may have done."""
        model = self.clients[step.client]
        for effect in step.effects:
            self._apply_effect(model, effect)

    def _apply_effect(self, model: ClientModel, effect: str) -> None:
        kind, _, arg = effect.partition(":")
        if (kind == "stmt" and not model.autocommit) or kind == "begin":
            model.in_txn = True
        elif kind == "end":
            model.end_txn()
        elif kind == "pin":
            model.pinned = True
        elif kind == "write" and (model.in_txn or not model.autocommit):
            model.written.add(arg)
        elif kind in ("lock", "try"):
            model.session_keys.add(arg)
        elif kind in ("xlock", "xtry") and model.in_txn:
            model.xact_keys.add(arg)
        elif kind == "autocommit":
            was_on, model.autocommit = model.autocommit, arg == "on"
            if model.autocommit and not was_on:
                model.end_txn()  # only turning it on commits; MariaDB keeps a BEGIN otherwise
        elif kind == "mark":
            model.marks.add(arg)
        elif kind == "reset":
            model.marks.clear()
            model.end_txn()
            model.autocommit = False  # unknown after a reset: assume the side that holds
            model.pinned = True
        elif kind == "reconnect":
            self._reconnect(model)

    def _reconnect(self, model: ClientModel) -> None:
        self.tainted |= model.held()
        model.end_txn()
        model.session_keys.clear()
        model.marks.clear()
        model.pinned = False
        model.autocommit = model.initial_autocommit


def check(program: Program) -> int | None:
    """The index of the first step the model does not admit, or None if all are."""
    model = PoolModel(program)
    for index, step in enumerate(program.steps):
        if not model.admits(step):
            return index
        model.apply(step)
    return None

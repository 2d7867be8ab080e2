"""A worker's place among its siblings: its index, how many there are, and what follows.

With `workers = N` the supervisor runs N processes, each a whole Sluice with its
own event loop, listeners (SO_REUSEPORT) and pools. What each must know of the
others is arithmetic on its slot, kept here:

- the connection budget of every proxy is split: worker i gets
  `limit // N`, plus one if `i < limit % N`, so the shares sum to the limit and
  the database never sees more than it (`split`);
- the ids a worker gives its clients (PostgreSQL's BackendKeyData pid, MySQL's
  connection id) leave `index` as their remainder modulo N, so no two workers
  give the same id and a cancel or KILL can name its owner (`owner`).

One worker (the default slot) changes nothing: `split` is the identity and every
id is its own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    index: int = 0
    count: int = 1
    group: int = 0  # the supervisor's pid: names the workers' peer channel (workers/peers.py)

    @property
    def single(self) -> bool:
        return self.count == 1

    def split(self, total: int) -> int:
        """This worker's part of `total` (connections): floor, the remainder to the first."""
        return total // self.count + (1 if self.index < total % self.count else 0)

    def owner(self, ident: int) -> int:
        """The worker that gave the id `ident`."""
        return ident % self.count

    def random_id(self) -> int:
        """A random positive 31-bit id that is this worker's."""
        top = (2**31 - 1 - self.index) // self.count
        return (secrets.randbelow(top) + (1 if self.index == 0 else 0)) * self.count + self.index

    def next_id(self, last: int) -> int:
        """The id after `last` that is this worker's, counted up and wrapping to the first."""
        following = last + self.count if last else self.index or self.count
        if following > 2**31 - 1:
            following = self.index or self.count
        return following


DEFAULT_SLOT = WorkerSlot()

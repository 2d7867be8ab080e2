"""Containers that many per-connection objects share until one needs its own.

An idle client keeps what it was given at login: a map it never fills costs 64
bytes, a list 56. Objects of which there is one per connection start with
these instead and make their own container on their first write; a write to
the shared one is a bug, and fails rather than reaching every other client.
`SharedDict` is the same for a map with contents (what clients alike share).
"""

from __future__ import annotations

from typing import NoReturn


class SharedEmptyDict(dict):  # type: ignore[type-arg]
    """An empty map that many objects share until one needs a map of its own (an idle
    client costs less): writing to it is a bug, and fails."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a shared empty map is not written to: make one of your own")

    __setitem__ = setdefault = update = __ior__ = _refuse


class SharedEmptyList(list):  # type: ignore[type-arg]
    """An empty list that many objects share, as `SharedEmptyDict`."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a shared empty list is not added to: make one of your own")

    __setitem__ = append = extend = insert = __iadd__ = _refuse


class SharedDict(dict):  # type: ignore[type-arg]
    """A map with contents that many objects share, read only: any change to it is a bug,
    and fails (`dict(shared)` is a map of one's own)."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a shared map is not changed: make one of your own")

    __setitem__ = __delitem__ = setdefault = update = __ior__ = _refuse
    pop = popitem = clear = _refuse

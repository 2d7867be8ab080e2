"""Finding any of a few words in a text in one pass over its bytes.

The SQL pre-checks of both engines (`wire/pg/sql.py`, `wire/mysql/sql.py`) look for a
dozen trigger words in every statement. A regular expression alternation tries each
word at almost every byte; here each word is looked for only where one of its rarer
letters is (its anchor: the `x` of EXECUTE, the `p` of TEMP), which a 256-byte table
tells, and only there are slices compared. Compiled, that costs a few instructions a
byte; interpreted, a few hundred, so the interpreted build keeps the regular
expressions (`COMPILED` says which build runs) and the property tests check that
both find the same. The compiled build also has this loop in C (`_anchors.c`, two or
three instructions a byte where mypyc's code takes about sixty), which `found_in`
calls when it is there; `found_in_here` is the loop in Python, which the tests
compare with it.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, Final, TypeAlias

Accept: TypeAlias = Callable[[bytes, bytes, int], bool]  # (text, word, where it starts) -> counts
Words: TypeAlias = tuple[tuple[tuple[bytes, int], ...], ...]
Scan: TypeAlias = Callable[[bytes, bytes, Words, "Accept | None"], bool]


def from_c(name: str) -> Any:
    """The function `name` of the wire layer's C loops (`_anchors.c`), or None where the
    build does not have them."""
    try:
        from sluice.wire import _anchors
    except ImportError:
        return None
    return getattr(_anchors, name)


SCAN: Final[Scan | None] = from_c("found_in")


class Anchors:
    """Words, each with the index of the letter it is looked for by."""

    __slots__ = ("_group", "_words")

    def __init__(self, words: tuple[tuple[bytes, int], ...]) -> None:
        anchors = sorted({word[at] for word, at in words})
        # the words found by each anchor letter, and a table from a byte to its group (+1)
        self._words = tuple(
            tuple((word, at) for word, at in words if word[at] == anchor) for anchor in anchors
        )
        self._group = bytes(anchors.index(b) + 1 if b in anchors else 0 for b in range(256))

    @property
    def table(self) -> bytes:
        """A byte's anchor group + 1 (0: no word is anchored at it)."""
        return self._group

    @property
    def words(self) -> Words:
        """The (word, offset of its anchor letter) pairs of each group."""
        return self._words

    def found_in(self, text: bytes, accept: Accept | None = None) -> bool:
        """Whether one of the words occurs in `text` (and `accept`, if given, takes that
        occurrence: `accept(text, word, start)`, asked only of the words' occurrences)."""
        if SCAN is not None:
            return SCAN(text, self._group, self._words, accept)
        return self.found_in_here(text, accept)

    def found_in_here(self, text: bytes, accept: Accept | None = None) -> bool:
        """`found_in`, by this loop (what the C loop does)."""
        group_of = self._group
        for i in range(len(text)):
            group = group_of[text[i]]
            if group:
                for word, at in self._words[group - 1]:
                    start = i - at
                    if (
                        start >= 0
                        and text[start : start + len(word)] == word
                        and (accept is None or accept(text, word, start))
                    ):
                        return True
        return False


def _compiled() -> bool:
    """Whether the wire layer runs compiled: mypyc makes its functions built-in ones."""
    return not isinstance(_compiled, types.FunctionType)


COMPILED: Final = _compiled()

"""Input for the fuzzing tests: random bytes, and valid messages with bytes flipped, cut
or spliced in (most bugs hide just past what a parser expects, not in pure noise).

Importable as `fuzzing` from any test module (see helpers.py). Hypothesis settings
are bounded so `make test` stays quick; SLUICE_FUZZ_EXAMPLES multiplies the number of
examples for a longer hunt (e.g. SLUICE_FUZZ_EXAMPLES=20 for twenty times as many).
"""

from __future__ import annotations

import os

from hypothesis import strategies as st

SCALE = int(os.environ.get("SLUICE_FUZZ_EXAMPLES", "1"))


def examples(count: int) -> int:
    """`count` examples, times SLUICE_FUZZ_EXAMPLES."""
    return count * max(SCALE, 1)


def mutated(valid: list[bytes]) -> st.SearchStrategy[bytes]:
    """One of `valid` with up to four edits: a byte changed, a cut, random bytes spliced in."""

    @st.composite
    def edit(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(valid)))
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(("flip", "cut", "insert")))
            at = draw(st.integers(0, len(data)))
            if kind == "flip" and at < len(data):
                data[at] = draw(st.integers(0, 255))
            elif kind == "cut":
                del data[at : at + draw(st.integers(1, 8))]
            else:
                data[at:at] = draw(st.binary(max_size=8))
        return bytes(data)

    return edit()


def noise(valid: list[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes, or a mutation of one of `valid`."""
    return st.one_of(st.binary(max_size=300), mutated(valid))


def sequences(valid: list[bytes], most: int = 6) -> st.SearchStrategy[bytes]:
    """Several of `valid` in a row, then mutated as one stream (or random bytes)."""
    joined = st.lists(st.sampled_from(valid), min_size=1, max_size=most).map(b"".join)
    return st.one_of(st.binary(max_size=300), joined, joined.flatmap(lambda s: mutated([s])))


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` split at `cuts` (offsets past the end are clamped)."""
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def sqlish(
    leads: tuple[str, ...], fragments: tuple[str, ...], blanks: tuple[str, ...]
) -> st.SearchStrategy[str]:
    """SQL-ish texts for the pre-checks' property tests: one of `blanks`, one of `leads`,
    up to eight `fragments` spaced or not, an ending with or without semicolons; each
    part in lower or upper case."""

    @st.composite
    def text(draw: st.DrawFn) -> str:
        parts = [draw(st.sampled_from(blanks)), draw(st.sampled_from(leads))]
        for fragment in draw(st.lists(st.sampled_from(fragments), max_size=8)):
            parts.append(draw(st.sampled_from(("", " ", " ", "\n"))))
            parts.append(fragment)
        parts.append(draw(st.sampled_from(("", ";", " ;", "; ", ";\n", ";;", ";\x0b"))))
        return "".join(part.translate(_UPPER) if draw(st.booleans()) else part for part in parts)

    return text()

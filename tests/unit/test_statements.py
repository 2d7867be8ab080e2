"""The names Sluice makes up for protocol-level prepared statements.

(The settings replay SQL and startup settings are tested in test_pg_settings.py.)
"""

from __future__ import annotations

from sluice.pg.statements import StatementNames


def test_statement_names_dedup() -> None:
    names = StatementNames()
    a = b"SELECT $1\x00\x00\x01\x00\x00\x00\x17"
    b = b"SELECT $1\x00\x00\x01\x00\x00\x00\x19"  # same text, other parameter type
    c = b"SELECT 2\x00\x00\x00"
    assert names.name_for(a) == b"sluice_1"
    assert names.name_for(b) == b"sluice_2"
    assert names.name_for(a) == b"sluice_1"
    assert names.name_for(c) == b"sluice_3"
    assert names.name_for(b) == b"sluice_2"


def test_statement_names_are_per_registry() -> None:
    body = b"SELECT 1\x00\x00\x00"
    first, second = StatementNames(), StatementNames()
    second.name_for(b"other\x00\x00\x00")
    assert first.name_for(body) == b"sluice_1"
    assert second.name_for(body) == b"sluice_2"


def test_statement_names_are_bounded_and_never_given_twice() -> None:
    """Ever new texts cannot grow the registry without end; a text prepared again after
    it was dropped gets a new name, so no name ever stands for two texts."""
    names = StatementNames(max_count=3, max_bytes=1 << 20)
    given = [names.name_for(b"SELECT %d\x00\x00\x00" % n) for n in range(10)]
    assert len(set(given)) == 10
    assert len(names) == 3
    assert names.name_for(b"SELECT 9\x00\x00\x00") == given[9]  # still there
    again = names.name_for(b"SELECT 0\x00\x00\x00")  # dropped long ago
    assert again not in given


def test_statement_names_bounded_by_bytes() -> None:
    names = StatementNames(max_count=1000, max_bytes=3000)
    for n in range(20):
        names.name_for(b"SELECT '%s'\x00\x00\x00" % (b"x" * 1000 + b"%d" % n))
    assert len(names) <= 3
    recent = names.name_for(b"SELECT '%s'\x00\x00\x00" % (b"x" * 1000 + b"19"))
    assert recent == b"sluice_20"  # the most recent is kept

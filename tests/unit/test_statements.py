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

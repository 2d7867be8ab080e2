"""SQL text made fit for a log line: bounded, on one line, and without secrets.

A proxy with `debug_logging` logs each statement its clients send (RDS Proxy's
DebugLogging). Statements can carry passwords: `CREATE ROLE r PASSWORD '...'`,
`ALTER USER u IDENTIFIED BY '...'`, `SET PASSWORD = PASSWORD('...')`,
`CHANGE MASTER TO MASTER_PASSWORD = '...'`, a connection string with
`password=` inside a literal (dblink, CREATE SUBSCRIPTION), pgcrypto calls. So
a statement in which any word of `_SENSITIVE` appears anywhere (in a literal or
a comment too) has every string literal, dollar-quoted string, double-quoted
string and comment replaced by a placeholder; other statements are kept as
sent. The rules err towards hiding: a backslash always escapes (as in MySQL and
PostgreSQL E'' strings), an unterminated literal or comment runs to the end,
and double quotes (PostgreSQL identifiers) are hidden too.

The text is cut to a bounded window before it is scanned and to `limit`
characters after, control characters and runs of white space become one
space, so a log line has a bounded length and cannot be split or forged by
what a client sends. Pure functions: no I/O, no logging.
"""

from __future__ import annotations

import re

DEFAULT_LIMIT = 300  # characters of a statement in a log line
PLACEHOLDER = "'***'"

# Words that make a statement sensitive wherever they appear (case-insensitive).
_SENSITIVE = re.compile(
    rb"passw|identified|secret|crypt|credential|token|private[ _]key", re.IGNORECASE
)
# String literals (E'', B'', X'', N'' prefixes; '' and backslash escapes), double-quoted
# strings, dollar-quoted strings ($$...$$, $tag$...$tag$) and comments (--, #, /* */).
_HIDDEN = re.compile(
    r"""
      [EeBbXxNn]?'(?:[^'\\]|\\.|'')*(?:'|\Z)
    | "(?:[^"\\]|\\.|"")*(?:"|\Z)
    | \$\$.*?(?:\$\$|\Z)
    | \$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)\$.*?(?:\$(?P=tag)\$|\Z)
    | --[^\n]* | \#[^\n]* | /\*.*?(?:\*/|\Z)
    """,
    re.VERBOSE | re.DOTALL,
)
_WHITE = re.compile(r"[\x00-\x20\x7f]+")


def is_sensitive(sql: bytes) -> bool:
    """Whether the statement may carry a secret (a word of `_SENSITIVE` anywhere in it)."""
    return _SENSITIVE.search(sql) is not None


def redact(sql: bytes, limit: int = DEFAULT_LIMIT) -> str:
    """`sql` for a log line: literals hidden if it is sensitive, one line, at most `limit`
    characters (plus a note of the full length when cut)."""
    scanned = limit * 4 + 16  # enough for `limit` characters once white space is squeezed
    window = sql[:scanned].decode("utf-8", errors="replace")
    if is_sensitive(sql):
        window = _HIDDEN.sub(_placeholder, window)
    text = _WHITE.sub(" ", window).strip()
    if len(text) > limit or len(sql) > scanned:
        text = f"{text[:limit]}... ({len(sql)} bytes)"
    return text


def _placeholder(match: re.Match[str]) -> str:
    token = match.group(0)
    return " " if token[0] in "-#/" else PLACEHOLDER

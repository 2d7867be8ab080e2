"""What a piece of SQL does to session state: track it, pin for it, or ignore it.

Transaction pooling moves a client between backend connections, so anything a
statement leaves behind in the *session* must either be replayed on the next
connection (the settings drivers and ORMs set on every connect: tracked) or tie
the client to its connection until it leaves (pinning). `classify` reads only
the leading keywords of each statement, after removing comments, and keeps the
text of a SET value byte for byte (decoded as latin-1) so it can be replayed
exactly. The few things looked for anywhere in a statement (function calls,
INTO TEMP, WITH HOLD, set_config) count only outside string and dollar-quoted
constants.

Keywords are an optimisation, never the only guard: a statement whose effects
the classifier cannot see is *opaque* (DO, CALL, CREATE, a leading keyword it
does not know, a call of a function that is not a known built-in: see
`sluice.wire.pg.calls`), and the proxy then checks the session once the
transaction ends. `writes` marks statements that may advance a sequence (a call
of nextval, a column default), after which lastval()/currval() answers belong
to that connection's last borrower. `schema` marks DDL (and DO blocks), after
which statements the server parsed before may not be what a new Parse gives;
`dropped_database` names the database a DROP DATABASE drops (the server refuses
while sessions use it, Sluice's idle pooled ones included).

Settings are reported as an ordered list of `Change`s (SET, RESET, RESET ALL,
and the savepoint commands that can undo them), each SET carrying the client's
own statement text: a statement the server accepted once is accepted again,
whatever its syntax (`SET TIME ZONE INTERVAL '+05:30' HOUR TO MINUTE`). A
custom (dotted) setting is reported apart: PostgreSQL keeps such a placeholder
variable in the session for good, so no reset can hide it from the next client.
Ordinary reads and writes whose parentheses follow only keywords and known
built-ins are answered by a byte-level test before any parsing (texts with
literals inlined differ every time, so no cache would help them); other texts
are classified once and cached (long ones, such as bulk INSERTs, are scanned in
C-speed jumps and never cached).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, NamedTuple

from sluice.wire.anchors import COMPILED, Anchors, from_c
from sluice.wire.pg.calls import NO_CALLS, NOT_CALLS, PURE, Calls, scan_calls

# The pre-check's answers (`_quick`, and the C loop's for texts without a parenthesis).
QUICK_NONE: Final = 0
QUICK_WRITES: Final = 1
QUICK_FULL: Final = 2

# Settings replayed on the borrowed connection instead of pinning (lower case).
TRACKED: Final = frozenset(
    {
        "application_name",
        "client_encoding",
        "datestyle",
        "timezone",
        "search_path",
        "extra_float_digits",
        "standard_conforming_strings",
        "intervalstyle",
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "bytea_output",
        "default_transaction_isolation",
        "default_transaction_read_only",
        "timezone_abbreviations",
        "jit",
    }
)

# The byte-level pre-check, on the lower-cased text: these words anywhere send the text
# to the full check. SET/RESET only count at the start of a statement (an UPDATE ... SET
# must not cost a parse): at the start of the text, or after a semicolon that is not the
# last character. Comments could hide a statement's start, so they count too. Each word
# is looked for where one of its rarer letters is (the offset of that letter in it).
_TRIGGERS: Final = (
    (b"prepare", 0), (b"execute", 1), (b"deallocate", 0), (b"temp", 3), (b"listen", 0),
    (b"advisory", 2), (b"hold", 3), (b"load", 3), (b"discard", 0), (b"set_config", 9),
    (b"/*", 0), (b"--", 0),
)  # fmt: skip
_ANCHORED: Final = Anchors(_TRIGGERS)  # (compiled: one pass over the bytes)
_ANCHORED_TABLE: Final = _ANCHORED.table
_ANCHORED_WORDS: Final = _ANCHORED.words


QUICK: Final[Callable[..., int] | None] = from_c("quick")  # `_quick` in C, where built


def _entered_at(word: bytes, at: int) -> bytes:
    """A pattern for `word` that starts with its letter `at` (the rest checked behind)."""
    behind = b"(?<=" + re.escape(word[: at + 1]) + b")" if at else b""
    return re.escape(word[at : at + 1]) + behind + re.escape(word[at + 1 :])


# Interpreted, the same search by the regular expression engine, in C: it skips the
# bytes that are none of those letters in a tight loop instead of trying every word at
# almost every position.
_TRIGGER_BYTES: Final = re.compile(b"|".join(_entered_at(word, at) for word, at in _TRIGGERS))
_FIRST_WORD: Final = re.compile(rb"\s*([a-z0-9_$.]*)")
# Byte classes, as bits of a table: white space (to bytes.strip() and to str.strip()
# after a latin-1 decoding), [a-z0-9_], name bytes [a-z0-9_$.], [a-z_], and what
# bytes.strip() strips.
_IS_SPACE: Final = 1
_IS_WORD: Final = 2
_IS_NAME: Final = 4
_STARTS_NAME: Final = 8
_IS_BLANK: Final = 16  # what bytes.strip() strips: b" \t\n\r\x0b\x0c"
_CLASSES: Final = bytes(
    (_IS_SPACE if chr(byte).isspace() else 0)
    | (_IS_WORD | _IS_NAME if chr(byte) in "abcdefghijklmnopqrstuvwxyz0123456789_" else 0)
    | (_IS_NAME if chr(byte) in "$." else 0)
    | (_STARTS_NAME if chr(byte) in "abcdefghijklmnopqrstuvwxyz_" else 0)
    | (_IS_BLANK if bytes((byte,)) in b" \t\n\r\x0b\x0c" else 0)
    for byte in range(256)
)
_TRAILING: Final = b"; \t\r\n"
# A byte looked for as an int: `b";" in data` first tries the bytes as an index and
# raises (and clears) a TypeError, a cost on every statement; `59 in data` is a memchr.
_SEMICOLON: Final = ord(";")
_PAREN_BYTE: Final = ord("(")
_QUOTE_BYTE: Final = ord('"')
_DOT: Final = ord(".")
_APOSTROPHE: Final = ord("'")
# Statements that start with these words and hold no trigger word, second statement or
# unknown call have no session effect (the byte-level pre-check's fast answer).
_PLAIN_READS: Final = frozenset(
    (
        b"select", b"show", b"begin", b"commit", b"rollback", b"end", b"start", b"fetch",
        b"move", b"close", b"savepoint", b"release", b"values", b"table",
    )
)  # fmt: skip
_READS: Final = tuple(sorted(_PLAIN_READS))  # (as the C loop takes them)
# (tuple[bytes, ...]: a fixed-length tuple type is kept unboxed in the compiled build, and
# boxed again, a new tuple, at every call that hands it to the C loop)
# no column default runs unless named:
_PLAIN_CHANGES: Final[tuple[bytes, ...]] = (b"update", b"delete")
# or may be named:
_DEFAULT_WORDS: Final[tuple[bytes, ...]] = (b"default", b"insert", b"merge", b"copy")
_HARMLESS: Final = frozenset(word.encode() for word in PURE | NOT_CALLS)
# Leading keywords whose effects are known: none beyond the transaction, or one the
# rules below recognise. Any other statement (DO, CALL, CREATE, REFRESH ...) is opaque.
_KNOWN: Final = frozenset(
    """
    select insert update delete merge with values table ( begin start commit end rollback
    abort savepoint release show explain fetch move close declare copy lock truncate
    notify unlisten checkpoint vacuum analyze analyse grant revoke comment drop alter set
    reset discard deallocate prepare execute listen load
    """.split()  # noqa: SIM905 (a table of words reads best as text)
)
# Statements that change the schema (DO: most often a migration's DDL). A statement the
# server parsed before one of them may no longer be what a new Parse would give.
_SCHEMA: Final = frozenset(("create", "alter", "drop", "do", "import"))
# What such a statement may name without changing any table, type or function.
_NOT_SCHEMA: Final = frozenset(
    """
    role user group database system tablespace subscription publication default index
    unique event
    """.split()  # noqa: SIM905 (a table of words reads best as text)
)
# Statements that may call nextval() without naming it, through column defaults
# (INSERT, MERGE, COPY FROM, SET col = DEFAULT). Triggers are not seen (documented).
_DEFAULTS: Final = frozenset(("insert", "merge", "copy"))
_MAY_DEFAULT: Final = re.compile(r"\b(?:insert|merge|copy|default)\b")
# A whole statement that only sets one setting for the session (how Sluice itself
# replays startup values); anything else calling set_config(..., false) pins.
_SET_CONFIG_CALL: Final = re.compile(
    r"select\s+(?:pg_catalog\.)?set_config\s*\(\s*'([a-z_][a-z0-9_.]*)'\s*,\s*"
    r"E?'(?:[^'\\]|\\.|'')*'\s*,\s*false\s*\)",
    re.IGNORECASE | re.S,
)
_SET_CONFIG_ANY: Final = re.compile(r"set_config\s*\(")
_PLAIN_NAME_LITERAL: Final = re.compile(r"\s*'[A-Za-z_][A-Za-z0-9_]*'\s*,")
_INTO_TEMP: Final = re.compile(
    r'\binto\s+(?:(?:temp|temporary|unlogged\s+temp)\b|(?:table\s+)?"?pg_temp(?:_\d+)?"?\s*\.)'
)
_WITH_HOLD: Final = re.compile(r"\bwith\s+hold\b")
_WORD: Final = re.compile(r'"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$.]*|=|\S')
# String constants (E'..' with backslash escapes), dollar-quoted constants (a `$`
# right after an identifier character belongs to the identifier) and quoted
# identifiers (kept, so a quote inside one does not start a constant).
_CONSTANT: Final = re.compile(
    r"(?<![\w$])[Ee]'(?:[^'\\]|\\.|'')*'?"
    r"|'(?:[^']|'')*'?"
    r"|(?<!\w)\$([A-Za-z_][A-Za-z0-9_]*|)\$.*?(?:\$\1\$|\Z)"
    r'|"(?:[^"]|"")*"?',
    re.S,
)
_ESCAPE_STRING_REST: Final = re.compile(r"(?:[^'\\]|\\.|'')*'", re.S)
_CREATE_BEFORE_TEMP: Final = frozenset(("global", "local", "or", "replace"))
# Words between CREATE and the name of what it creates.
_CREATE_BEFORE_NAME: Final = frozenset(
    """
    or replace global local temp temporary unlogged materialized recursive table view
    sequence function procedure type domain aggregate if not exists
    """.split()  # noqa: SIM905 (a table of words reads best as text)
)
_PG_TEMP: Final = re.compile(r'"?pg_temp(?:_\d+)?"?(?:\.|$)')
_SPECIAL: Final = re.compile(r"[;'\"$]|--|/\*")
_DOLLAR_TAG: Final = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_CACHE_MAX_LEN: Final = 2048  # longer texts (bulk INSERTs) are classified but not kept
# classify_statement's, oldest first (a dict of its own: functools.lru_cache makes a tuple
# key for a bytes argument, about 480 more instructions per Parse)
_STATEMENTS: Final[dict[bytes, Effect]] = {}
_STATEMENTS_MAX: Final = 1024
_NAME_MAX: Final = 63  # NAMEDATALEN - 1: PostgreSQL cuts longer identifiers
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class ChangeKind(enum.IntEnum):
    SET = 0  # name = value: `stmt` is the statement that sets it again
    RESET = 1  # name back to the session's startup value (RESET, SET ... TO DEFAULT)
    RESET_ALL = 2  # RESET ALL, DISCARD ALL
    SAVEPOINT = 3  # name is the savepoint's, folded as PostgreSQL folds identifiers
    ROLLBACK_TO = 4
    RELEASE = 5


class Change(NamedTuple):
    """One step a statement takes on the tracked settings, in statement order."""

    kind: ChangeKind
    name: str = ""
    stmt: bytes = b""  # SET only: the client's own statement text, byte for byte


@dataclass(frozen=True, slots=True)
class Effect:
    """Session effects of one query string (all its statements)."""

    pin: str = ""  # why the client must keep its connection, if it must
    changes: tuple[Change, ...] = ()  # tracked settings and savepoints, in order
    drops_statements: bool = False  # DISCARD ALL / DEALLOCATE ALL
    custom: str = ""  # a custom (dotted) setting the statement may create, if any
    opaque: bool = False  # may leave session state no rule here sees: check afterwards
    writes: bool = False  # may advance a sequence (what lastval()/currval() answer)
    # The whole text is one DEALLOCATE: the statement's name ("" for ALL), else None.
    deallocate: str | None = None
    schema: bool = False  # may change what statements parsed before it mean (DDL)
    dropped_database: str = ""  # DROP DATABASE: the database's name, as the server folds it


NO_EFFECT: Final = Effect()
_WRITES_ONLY: Final = Effect(writes=True)


def classify_bytes(sql: bytes) -> Effect:
    """`classify` for the raw text of a Query or Parse; most reads and writes never get
    decoded (texts with literals inlined differ every time: no cache would help them)."""
    answer = -1
    if QUICK is not None:  # (the C loop, for texts without a parenthesis)
        answer = QUICK(sql, _CLASSES, _ANCHORED_TABLE, _ANCHORED_WORDS, _READS, _PLAIN_CHANGES,
                       _DEFAULT_WORDS)  # fmt: skip
    if answer < 0:
        answer = _quick(sql)
    if answer == QUICK_NONE:
        return NO_EFFECT
    if answer == QUICK_WRITES:
        return _WRITES_ONLY
    return classify(sql.decode("latin-1"))


def _quick(sql: bytes) -> int:
    """The byte-level pre-check: QUICK_NONE (no session effect), QUICK_WRITES (may advance
    a sequence, nothing else) or QUICK_FULL (`classify` must tell)."""
    low = sql.lower()
    if (_SEMICOLON not in low or _SEMICOLON not in low.rstrip(_TRAILING)) and not (
        _has_trigger(low) if COMPILED else _TRIGGER_BYTES.search(low) is not None
    ):
        first = _first_word(low) if COMPILED else _first_word_re(low)
        if first in _PLAIN_READS:
            if _PAREN_BYTE not in low or _no_unknown_call(low):
                return QUICK_NONE
        elif _PAREN_BYTE not in low or _no_unknown_call(low):
            if first in _PLAIN_CHANGES and not _may_default(low):
                return QUICK_NONE
            if first == b"insert":
                return QUICK_WRITES
    return QUICK_FULL


def classify_statement(sql: bytes) -> Effect:
    """`classify_bytes` for the text of a Parse. Clients send the same texts again and
    again (the values travel in Bind), so their effects are kept by text: the most
    recent `_STATEMENTS_MAX` texts of up to `_CACHE_MAX_LEN` bytes."""
    effect = _STATEMENTS.get(sql)
    if effect is None:
        effect = classify_bytes(sql)
        if len(sql) <= _CACHE_MAX_LEN:
            if len(_STATEMENTS) >= _STATEMENTS_MAX:
                del _STATEMENTS[next(iter(_STATEMENTS))]  # the oldest
            _STATEMENTS[sql] = effect
    return effect


def _has_trigger(low: bytes) -> bool:
    """Whether one of `_TRIGGERS` occurs in `low` (what `_TRIGGER_BYTES` finds)."""
    return _ANCHORED.found_in(low)


def _may_default(low: bytes) -> bool:
    """The words that make `classify` count an UPDATE as a possible write, anywhere."""
    return any(low.find(word) >= 0 for word in _DEFAULT_WORDS)


def _first_word(low: bytes) -> bytes:
    """The leading name after the leading white space (the first word `classify` sees,
    when it is a keyword)."""
    start = 0
    while start < len(low) and _CLASSES[low[start]] & _IS_BLANK:
        start += 1
    end = start
    while end < len(low) and _CLASSES[low[end]] & _IS_NAME:
        end += 1
    return low[start:end]


def _first_word_re(low: bytes) -> bytes:
    """`_first_word` by the regular expression engine."""
    found = _FIRST_WORD.match(low)
    return found.group(1) if found is not None else b""


def _no_unknown_call(low: bytes) -> bool:
    """Every `word (` in the raw text (constants included, which only adds words) is a
    keyword, a known built-in or a column list after INTO/AS/COPY; no quoted names."""
    if _QUOTE_BYTE in low:
        return False
    at = low.find(_PAREN_BYTE)
    while at >= 0:
        if not _harmless_paren(low, at):
            return False
        at = low.find(_PAREN_BYTE, at + 1)
    return True


def _harmless_paren(low: bytes, at: int) -> bool:
    """The parenthesis at `at` follows no name (an operator, a number), a keyword or
    known built-in that no `schema .` qualifies, or the name after INTO/AS/COPY (a
    column list). A name is a run of [a-z0-9_$.] that starts with a letter or `_`."""
    end = _skip_space_back(low, at)
    if end > 0 and low[end - 1] == _APOSTROPHE:
        return False  # `show E'x'(`: `classify` blanks the constant, which joins them
    start = end
    while start > 0 and _CLASSES[low[start - 1]] & _IS_NAME:
        start -= 1
    if start == end:
        return True
    if not _CLASSES[low[start]] & _STARTS_NAME:
        return False  # `.f(`, `$1(`: part of a name split by white space, or a mistake
    before = _skip_space_back(low, start)
    if before > 0 and low[before - 1] == _DOT:
        return False  # `s . f(`: a qualified name
    if low[start:end] in _HARMLESS:
        return True
    if before == start:
        return False
    word_start = before
    while word_start > 0 and _CLASSES[low[word_start - 1]] & _IS_WORD:
        word_start -= 1
    return low[word_start:before] in (b"into", b"as", b"copy")


def _skip_space_back(low: bytes, end: int) -> int:
    while end > 0 and _CLASSES[low[end - 1]] & _IS_SPACE:
        end -= 1
    return end


def classify(sql: str) -> Effect:
    """The session effects of `sql` (a Query or Parse text)."""
    return _classify_cached(sql) if len(sql) <= _CACHE_MAX_LEN else _classify_slow(sql)


def _classify_slow(sql: str) -> Effect:
    pin = custom = ""
    changes: list[Change] = []
    drops = opaque = writes = schema = False
    dropped = ""
    statements = split_statements(sql)
    for stmt in statements:
        raw = _WORD.findall(stmt, 0, 400)[:12]
        words = [w.lower() for w in raw]
        if not words:
            continue
        lone = _deallocated(raw) if len(statements) == 1 and words[0] == "deallocate" else None
        if lone is not None:
            return Effect(deallocate=lone)
        custom = custom or _custom_setting(words, stmt)
        call = _SET_CONFIG_CALL.fullmatch(stmt)
        if call is not None and call.group(1).lower() in TRACKED:
            changes.append(Change(ChangeKind.SET, call.group(1).lower(), stmt.encode("latin-1")))
            continue
        savepoint = _savepoint(words, raw)
        if savepoint is not None:
            changes.append(savepoint)
            continue
        reason, change = _statement(words, stmt)
        seen = _unseen(words, stmt)
        pin = pin or reason or seen.pin
        schema = schema or _changes_schema(words)
        dropped = dropped or _dropped_database(words, raw)
        opaque = opaque or seen.opaque
        writes = writes or seen.writes
        if change == "drop":
            drops = True
        elif change == "discard_all":
            drops = True
            changes.append(Change(ChangeKind.RESET_ALL))
        elif isinstance(change, Change):
            changes.append(change)
    if not any(change.kind < ChangeKind.SAVEPOINT for change in changes):
        changes = []  # savepoints matter only to settings (`savepoint_changes` otherwise)
    if not (pin or changes or drops or custom or opaque or writes or schema or dropped):
        return NO_EFFECT
    return Effect(
        pin, tuple(changes), drops, custom, opaque, writes, schema=schema, dropped_database=dropped
    )


_classify_cached: Final = lru_cache(maxsize=4096)(_classify_slow)


def _unseen(words: list[str], stmt: str) -> Calls:
    """What the words of a statement do not tell: its calls, and whether it may write."""
    first = words[0]
    inner = first in ("update", "with", "explain", "(")  # may hold an INSERT or a DEFAULT
    code = _code(stmt) if inner or "(" in stmt else ""
    found = scan_calls(code) if "(" in code else NO_CALLS
    opaque = first not in _KNOWN or found.opaque
    writes = (
        opaque
        or found.writes
        or first in _DEFAULTS
        or (inner and _MAY_DEFAULT.search(code.lower()) is not None)
    )
    if not (found.pin or opaque or writes):
        return NO_CALLS
    return Calls(found.pin, opaque, writes)


def _changes_schema(words: list[str]) -> bool:
    """DDL after which a statement parsed before may differ from one parsed now."""
    return words[0] in _SCHEMA and len(words) > 1 and words[1] not in _NOT_SCHEMA


def _dropped_database(words: list[str], raw: list[str]) -> str:
    """The database a DROP DATABASE names (folded), or ''."""
    if words[:2] != ["drop", "database"]:
        return ""
    at = 4 if words[2:4] == ["if", "exists"] else 2
    return fold_identifier(raw[at]) if at < len(raw) else ""


def _code(stmt: str) -> str:
    """`stmt` with its string and dollar constants blanked (quoted identifiers kept)."""
    return _CONSTANT.sub(_blank_constant, stmt)


def _deallocated(raw: list[str]) -> str | None:
    """The statement a DEALLOCATE names, as the server folds it ("" for ALL); None if the
    statement is not that simple (the server will say what is wrong with it)."""
    rest = raw[2:] if len(raw) > 2 and raw[1].lower() == "prepare" else raw[1:]
    if len(rest) != 1 or "." in rest[0] or rest[0] == '""':
        return None
    if rest[0].lower() == "all":
        return ""
    return fold_identifier(rest[0])


def _statement(words: list[str], stmt: str) -> tuple[str, Change | str | None]:
    first = words[0]
    low = stmt.lower()
    if first == "set":
        return _set(words, stmt)
    if first == "reset":
        if words[1:2] == ["all"]:
            return "", Change(ChangeKind.RESET_ALL)
        name = _name(words[1]) if len(words) > 1 else ""
        if words[1:3] == ["time", "zone"]:
            name = "timezone"
        return "", (Change(ChangeKind.RESET, name) if name else None)  # maybe a startup one
    if first == "discard":
        return "DISCARD", ("discard_all" if words[1:2] == ["all"] else None)
    if first == "deallocate":
        drops = words[1:2] == ["all"] or words[1:3] == ["prepare", "all"]
        return "DEALLOCATE", ("drop" if drops else None)
    if first == "prepare" and words[1:2] != ["transaction"]:
        return "PREPARE", None
    if first == "execute":
        return "EXECUTE", None
    if first == "listen":
        return "LISTEN", None
    if first == "load":
        return "LOAD", None
    if first == "create" and (_creates_temp(words) or _creates_in_pg_temp(words)):
        return "temporary object", None
    if first in ("select", "with") and _found(_INTO_TEMP, low, stmt):
        return "temporary object", None
    if first == "declare" and _found(_WITH_HOLD, low, stmt):
        return "cursor WITH HOLD", None
    return "", None


def _set(words: list[str], stmt: str) -> tuple[str, Change | None]:
    rest = words[1:]
    if not rest or rest[0] in ("local", "transaction", "constraints"):
        return "", None  # lasts until the end of the transaction at most
    if rest[0] == "session":
        rest = rest[1:]
        if not rest or rest[0] in ("authorization", "characteristics"):
            return "SET SESSION " + (rest[0].upper() if rest else ""), None
    if rest[0] in ("role", "authorization"):
        return "SET ROLE", None
    if rest[:2] == ["time", "zone"]:
        value = _value_after(stmt, r"\bzone\b")
        return "", _tracked_set("timezone", value.lower() in ("default", "local"), stmt)
    if rest[0] == "names":
        value = _value_after(stmt, r"\bnames\b")
        return "", _tracked_set("client_encoding", value.lower() == "default", stmt)
    name = _name(rest[0])
    value = _value_after(stmt, r"(?:\bto\b|=)")
    if value.lower() == "default":
        return "", Change(ChangeKind.RESET, name)  # RESET by another name: never pins
    if name not in TRACKED:
        return f"SET {name}", None
    if rest[1:3] == ["from", "current"]:
        return "", None  # sets the value it already has
    return "", _tracked_set(name, False, stmt)


def _tracked_set(name: str, to_default: bool, stmt: str) -> Change:
    if to_default:
        return Change(ChangeKind.RESET, name)
    return Change(ChangeKind.SET, name, stmt.encode("latin-1"))


def _savepoint(words: list[str], raw: list[str]) -> Change | None:
    """SAVEPOINT x, RELEASE [SAVEPOINT] x, ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] x;
    ROLLBACK AND CHAIN undoes everything as a ROLLBACK TO a savepoint made at BEGIN."""
    first = words[0]
    if first in ("rollback", "abort") and "chain" in words and "no" not in words:
        return Change(ChangeKind.ROLLBACK_TO)  # no savepoint has an empty name
    if first == "savepoint":
        kind, at = ChangeKind.SAVEPOINT, 1
    elif first == "release":
        kind, at = ChangeKind.RELEASE, 2 if words[1:2] == ["savepoint"] else 1
    elif first == "rollback":
        at = 2 if words[1:2] in (["work"], ["transaction"]) else 1
        if words[at : at + 1] != ["to"]:
            return None
        kind = ChangeKind.ROLLBACK_TO
        at += 2 if words[at + 1 : at + 2] == ["savepoint"] else 1
    else:
        return None
    return Change(kind, fold_identifier(raw[at])) if at < len(raw) else None


def fold_identifier(word: str) -> str:
    """An identifier as PostgreSQL stores it: unquoted ones lower-cased, cut to 63 bytes."""
    name = word[1:-1].replace('""', '"') if word.startswith('"') else word.translate(_ASCII_LOWER)
    data = name.encode("latin-1")  # the client's bytes (texts are decoded as latin-1)
    if len(data) <= _NAME_MAX:
        return name
    cut = _NAME_MAX
    while cut and 0x80 <= data[cut] < 0xC0:  # not inside a UTF-8 character
        cut -= 1
    return data[:cut].decode("latin-1")


def savepoint_changes(sql: bytes) -> tuple[Change, ...]:
    """The savepoint commands in `sql` (checked only while settings are pending)."""
    low = sql.lower()
    if not any(word in low for word in (b"savepoint", b"release", b"rollback", b"abort")):
        return ()
    changes = []
    for stmt in split_statements(sql.decode("latin-1")):
        raw = _WORD.findall(stmt, 0, 200)[:6]
        found = _savepoint([w.lower() for w in raw], raw) if raw else None
        if found is not None:
            changes.append(found)
    return tuple(changes)


def _custom_setting(words: list[str], stmt: str) -> str:
    """The custom (dotted) setting this statement may create in the session, or ''."""
    first = words[0]
    if first in ("set", "reset") and len(words) > 1:
        at = 2 if words[1] in ("session", "local") and first == "set" else 1
        name = _name(words[at]) if at < len(words) else ""
        dotted = "." in name or words[at + 1 : at + 2] == ["."]  # "my"."name"
        return name if dotted else ""
    if "set_config" not in stmt.lower():
        return ""
    # constants blanked to the same length, so positions still match `stmt`
    code = _CONSTANT.sub(_blank_constant, stmt)
    for match in _SET_CONFIG_ANY.finditer(code.lower()):
        if _PLAIN_NAME_LITERAL.match(stmt, match.end()) is None:
            return "set_config()"  # a dotted name, or one known only when it runs
    return ""


def _creates_temp(words: list[str]) -> bool:
    """CREATE [GLOBAL|LOCAL] TEMP ..., CREATE [OR REPLACE] TEMP VIEW: TEMP comes first."""
    for word in words[1:5]:
        if word in ("temp", "temporary"):
            return True
        if word not in _CREATE_BEFORE_TEMP:
            return False
    return False


def _creates_in_pg_temp(words: list[str]) -> bool:
    """CREATE TABLE pg_temp.x (a temporary table by its schema), or "pg_temp_3".x."""
    for word in words[1:]:
        if word not in _CREATE_BEFORE_NAME:
            return _PG_TEMP.match(word) is not None
    return False


def _blank_constant(match: re.Match[str]) -> str:
    text = match.group(0)
    return text if text[0] == '"' else " " * len(text)


def _found(pattern: re.Pattern[str], low: str, stmt: str) -> bool:
    """`pattern` occurs in the lower-cased statement outside string and dollar constants."""
    if pattern.search(low) is None:
        return False
    code = _CONSTANT.sub(lambda m: m.group(0) if m.group(0)[0] == '"' else " ", stmt)
    return pattern.search(code.lower()) is not None


def _name(word: str) -> str:
    return word[1:-1].replace('""', '"') if word.startswith('"') else word


def _value_after(stmt: str, keyword: str) -> str:
    match = re.search(keyword, stmt, re.IGNORECASE)
    return stmt[match.end() :].strip() if match else ""


def split_statements(sql: str) -> list[str]:
    """Split on semicolons outside quotes, dollar quotes and comments; comments removed."""
    out: list[str] = []
    cur: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        match = _SPECIAL.search(sql, i)  # jump over ordinary text in one step
        if match is None:
            cur.append(sql[i:])
            break
        token, j = match.group(), match.start()
        cur.append(sql[i:j])
        if token == ";":
            out.append("".join(cur).strip())
            cur = []
            i = j + 1
        elif token == "--":
            k = sql.find("\n", j)
            i = n if k < 0 else k
            cur.append(" ")
        elif token == "/*":
            i = _skip_block_comment(sql, j)
            cur.append(" ")
        else:
            i = _skip_constant(sql, j, token)
            cur.append(sql[j:i])
    out.append("".join(cur).strip())
    return [s for s in out if s]


def _skip_constant(sql: str, j: int, token: str) -> int:
    """The end of the quoted identifier or constant that `token` starts at `j`."""
    if token == '"':
        return _skip_quoted(sql, j, token)
    prev = sql[j - 1] if j > 0 else " "
    if token == "$":
        return j + 1 if prev.isalnum() or prev == "_" else _skip_dollar(sql, j)
    prev2 = sql[j - 2] if j > 1 else " "
    if prev in "eE" and not (prev2.isalnum() or prev2 in "_$"):
        match = _ESCAPE_STRING_REST.match(sql, j + 1)  # E'...': backslash escapes
        return match.end() if match else len(sql)
    return _skip_quoted(sql, j, token)


def _skip_quoted(sql: str, i: int, quote: str) -> int:
    j = i + 1
    while True:
        j = sql.find(quote, j)
        if j < 0:
            return len(sql)
        if sql.startswith(quote * 2, j):
            j += 2
            continue
        return j + 1


def _skip_block_comment(sql: str, i: int) -> int:
    depth, j = 0, i
    while j < len(sql):
        if sql.startswith("/*", j):
            depth += 1
            j += 2
        elif sql.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return len(sql)


def _skip_dollar(sql: str, i: int) -> int:
    match = _DOLLAR_TAG.match(sql, i)
    if not match:
        return i + 1
    tag = match.group(0)
    end = sql.find(tag, i + len(tag))
    return len(sql) if end < 0 else end + len(tag)

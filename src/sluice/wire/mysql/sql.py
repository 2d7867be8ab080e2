"""What a MySQL/MariaDB SQL text does to session state: track it, pin for it, or ignore it.

Design: with transaction pooling a client moves between backend connections, so
whatever a COM_QUERY or COM_STMT_PREPARE text leaves in the *session* must be
replayed on the next connection (the settings drivers and ORMs set on connect:
tracked) or tie the client to its connection until it leaves (pinning).

- Speed: `classify_bytes` rejects ordinary queries with a byte-level test (no
  trigger substring, a leading keyword such as SELECT or INSERT that leaves no
  session state, no `;` before the end) and decodes nothing. An UPDATE ... SET
  never reaches the parser: SET counts only at a statement's start. Texts that
  pass are split into statements and classified; results for short texts are
  cached, bulk statements are scanned in regex jumps.
- Lexing follows the server: '..' and ".." with backslash escapes and doubled
  quotes, `..` identifiers, comments `# ..`, `-- ..` (a space or control character
  after the dashes) and `/* .. */` (not nested). `/*! .. */` and `/*M! .. */` are
  executable comments (mysqldump writes its SETs in them): their content is code,
  whatever the version number. Searches run on a copy of each statement with the
  quoted text blanked out, of the same length, so offsets map back to the original
  and SET values are replayed byte for byte.
- A text that reads differently without backslash escapes (the NO_BACKSLASH_ESCAPES
  sql_mode, which this stateless function cannot see) is classified both ways; if
  the readings disagree the client is pinned rather than guessed about.
- Tracked: `Effect.sets` holds (key, statement), in order. Keys are the canonical
  names of TRACKED (tx_isolation is recorded as transaction_isolation, tx_read_only
  as transaction_read_only) plus two pseudo-variables: "names" (SET NAMES, which sets
  character_set_client/connection/results and collation_connection) and "charset"
  (SET CHARACTER SET / SET CHARSET). The statement replays it as the client wrote
  it (an alias stays an alias: MariaDB < 11.1 has no transaction_isolation). A consumer
  keeps the last statement per key and replays them in the order they were last
  written (re-setting a key moves it to the end); that order reproduces overlapping
  settings such as NAMES then character_set_results exactly.
- A tracked SET whose value reads a variable (`CONCAT(@@sql_mode, ..)`, `@old`)
  would replay differently elsewhere, so it pins. `SET GLOBAL`/`PERSIST` and
  `@@global.x` change nothing in the session. `SET TRANSACTION` (no SESSION) waits on
  the connection for its next explicit transaction (MariaDB 10.11 keeps it across
  autocommit statements): it pins unless BEGIN or START TRANSACTION follows in the
  same text, or lending the connection would give it to another client's BEGIN.
- Opaque statements: a CALL may leave anything in the session (user variables,
  temporary tables, locks, a role) that the client reads later, so it pins. A
  statement whose first word is not one the classifier knows, or a DO (it runs
  functions for their side effects), taints the connection (`Effect.taint`): it is
  reset before another client borrows it. The pre-check lets through without
  parsing only texts that start with a word known to leave no session state.
- Reads of what the previous statements left (`Effect.reads`, and which of those
  results in `Effect.read_kinds`): ROW_COUNT(), FOUND_ROWS(), the diagnostics area
  (@@warning_count, @@error_count, SHOW WARNINGS/ERRORS, GET DIAGNOSTICS) and
  @@last_gtid. They mean something only on a connection that holds the client's own
  results (see `sluice.mysql.results`). A read that follows an earlier statement of
  the same text which certainly set what it reads (the text stops at its first
  error, so every earlier statement succeeded) reads that statement, and is left
  out: ROW_COUNT() after any statement but GET DIAGNOSTICS, FOUND_ROWS() after a
  SELECT, the diagnostics after an INSERT, UPDATE, DELETE, REPLACE or a SELECT
  FROM a table (MariaDB clears them only for a statement that uses a table or
  raises a condition). Such a read also pins: a client that reads them once will
  read them again.
- `Effect.role`: the statement may change the current role (SET ROLE, CALL,
  EXECUTE, compound statements), which MariaDB keeps across COM_RESET_CONNECTION.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

from sluice.wire.anchors import COMPILED, Anchors

# Session variables replayed on the borrowed connection instead of pinning (lower case),
# with the pseudo-variables "names" (SET NAMES) and "charset" (SET CHARACTER SET).
# fmt: off
TRACKED: Final = frozenset({
    "character_set_client", "character_set_connection", "character_set_results",
    "collation_connection", "autocommit", "sql_mode", "time_zone", "transaction_isolation",
    "transaction_read_only", "wait_timeout", "net_write_timeout", "net_read_timeout",
    "interactive_timeout", "auto_increment_increment", "auto_increment_offset",
    "sql_select_limit", "max_execution_time", "innodb_lock_wait_timeout", "lock_wait_timeout",
    "group_concat_max_len", "foreign_key_checks", "unique_checks", "sql_safe_updates",
    "names", "charset",
})
# fmt: on
# Older names of tracked variables: recorded under the name they map to.
ALIASES: Final[dict[str, str]] = {
    "tx_isolation": "transaction_isolation",
    "tx_read_only": "transaction_read_only",
}
_PSEUDO: Final = frozenset({"names", "charset"})


# Results of earlier statements that a session keeps and a statement may read
# (`Effect.read_kinds`, bit flags).
ROW_COUNT: Final = 1  # ROW_COUNT()
FOUND_ROWS: Final = 2  # FOUND_ROWS()
DIAGNOSTICS: Final = 4  # the warnings and errors: SHOW WARNINGS, @@warning_count, GET DIAGNOSTICS
LAST_GTID: Final = 8  # @@last_gtid


@dataclass(frozen=True, slots=True)
class Effect:
    """Session effects of one query string (all its statements)."""

    pin: str = ""  # why the client must keep its connection ("" = it need not)
    sets: tuple[tuple[str, str], ...] = ()  # (variable, statement that replays it), in order
    schema: str | None = None  # the database of the last USE, unquoted
    taint: str = ""  # why the connection must be reset before another client gets it
    reads: str = ""  # what of the previous statement's results the text reads first
    role: bool = False  # the current role may change
    read_kinds: int = 0  # which of those results it reads (ROW_COUNT | DIAGNOSTICS ...)


NO_EFFECT: Final = Effect()

# --- the pre-check: on the lower-cased text, before any decoding or parsing ---
# (`_count`, `_gtid`, `next`: row_count, warning_count, error_count, last_gtid, nextval,
# next value for; short words keep the search as fast as before they were added.)
_ANYWHERE: Final = (
    r":=|into\s*@|temporary|get_lock|found_rows|_count|_gtid|next|setval"
    r"|last_insert_id\s*\(\s*[^\s)]|/\*|#|--"
)
_TRIGGER_STR: Final = re.compile(_ANYWHERE, re.ASCII)
_TRIGGER_BYTES: Final = re.compile(_ANYWHERE.encode())
# The same triggers for one pass over the bytes (compiled): each is looked for
# where one of its rarer letters is (its offset in the word); `@` counts after INTO and
# LAST_INSERT_ID with an argument (`_trigger_ends`).
_TRIGGERS: Final = (
    (b":=", 0), (b"@", 0), (b"temporary", 8), (b"get_lock", 7), (b"found_rows", 5),
    (b"_count", 0), (b"_gtid", 0), (b"next", 2), (b"setval", 3), (b"last_insert_id", 4),
    (b"/*", 0), (b"#", 0), (b"--", 0),
)  # fmt: skip
_ANCHORED: Final = Anchors(_TRIGGERS)  # (compiled: one pass over the bytes)
_ARGUMENT: Final = re.compile(rb"\s*\(\s*[^\s)]")
_SPACE_BYTES: Final = b" \t\n\r\x0b\x0c"  # what \s is in a bytes pattern
# Texts starting with these words (and without a trigger or a second statement) leave
# no session state: the only ones not parsed.
_PLAIN_STARTS: Final[tuple[str, ...]] = (
    "select",
    "insert",
    "update",
    "delete",
    "replace",
    "begin",
    "commit",
    *("rollback", "start", "with", "values", "table", "create", "alter", "truncate"),
    *("explain", "describe", "desc", "savepoint", "release", "unlock", "analyze"),
    *("optimize", "rename", "grant", "revoke", "check", "repair", "load"),
)
_PLAIN_WORDS: Final = frozenset(_PLAIN_STARTS)
_PLAIN_BYTES: Final = frozenset(s.encode() for s in _PLAIN_STARTS)
_NAME_BYTES: Final = bytes(
    1 if chr(byte) in "abcdefghijklmnopqrstuvwxyz0123456789_$" else 0 for byte in range(256)
)
_FIRST_WORD: Final = re.compile(r"[a-z0-9_$]*", re.ASCII)
# A byte looked for as an int: `b";" in data` first tries the bytes as an index and
# raises (and clears) a TypeError, a cost on every statement; `59 in data` is a memchr.
_SEMICOLON: Final = ord(";")
_TRAILING_BYTES: Final = b"; \t\n\r\x0b\x0c"
# Interpreted, what the loops of the compiled build do is faster done by regular
# expressions (in C): a leading word of `_PLAIN_BYTES`, and `_TRIGGER_BYTES`.
_PLAIN_START: Final = re.compile(
    rb"\s*(?:" + "|".join(_PLAIN_STARTS).encode() + rb")(?![a-z0-9_$])"
)
# First words of statements known to the classifier: anything else taints.
_KNOWN: Final = frozenset(
    (
        *_PLAIN_STARTS,
        *("(", "set", "use", "show", "lock", "flush", "prepare", "execute"),
        *("deallocate", "drop", "handler", "xa", "call", "get", "kill", "help", "backup"),
        *("if", "while", "loop", "repeat", "end"),
    )
)
_WS: Final = " \t\n\r\x0b\x0c"
_TRAILING: Final = ";" + _WS
_CACHE_MAX_LEN: Final = 2048  # longer texts (bulk INSERTs) are classified but not kept

# --- lexing ---
_SPECIAL: Final = re.compile(r"[;'\"`#]|--|/\*|\*/")
_EXEC_COMMENT: Final = re.compile(r"/\*M?!\d*")
_QUOTED_ESC: Final = re.compile(
    r"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'?"
    r'|"[^"\\]*(?:(?:\\.|"")[^"\\]*)*"?'
    r"|`[^`]*(?:``[^`]*)*`?",
    re.S,
)
_QUOTED_RAW: Final = re.compile(
    r"'[^']*(?:''[^']*)*'?" r'|"[^"]*(?:""[^"]*)*"?' r"|`[^`]*(?:``[^`]*)*`?"
)
_PLAIN: Final = re.compile(r"[A-Za-z0-9_$]+", re.ASCII)
_WORD: Final = re.compile(r"`[^`]*`?|[A-Za-z0-9_$]+|\S", re.ASCII)

# --- searches on a statement's code (quoted text blanked) ---
_I: Final = re.IGNORECASE | re.ASCII
_EVERYWHERE: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"\bget_lock`?\s*\(", _I), "GET_LOCK"),
    (re.compile(r"\bsql_calc_found_rows\b", _I), "SQL_CALC_FOUND_ROWS"),
    (re.compile(r"\blast_insert_id`?\s*\(\s*[^\s)]", _I), "LAST_INSERT_ID(expr)"),
    (re.compile(r"\b(?:nextval|setval)`?\s*\(|\bnext\s+value\s+for\b", _I), "sequence value"),
)
# What the previous statement left, read by the first statement of a text.
_READS: Final[tuple[tuple[re.Pattern[str], str, int], ...]] = (
    (re.compile(r"\brow_count`?\s*\(", _I), "ROW_COUNT()", ROW_COUNT),
    (re.compile(r"\bfound_rows`?\s*\(", _I), "FOUND_ROWS()", FOUND_ROWS),
    (
        re.compile(r"@@(?:session\s*\.\s*|local\s*\.\s*)?(warning_count|error_count)\b", _I),
        "",
        DIAGNOSTICS,
    ),
    (re.compile(r"@@(?:session\s*\.\s*|local\s*\.\s*)?last_gtid\b", _I), "@@last_gtid", LAST_GTID),
)
_SHOW_READS: Final = {
    "warnings": "SHOW WARNINGS",
    "errors": "SHOW ERRORS",
    "count": "SHOW COUNT(*)",
}
_TABLE_WRITES: Final = frozenset(("insert", "update", "delete", "replace"))
_FROM_OR_PAREN: Final = re.compile(r"[()]|\bfrom\b\s*([A-Za-z0-9_$]+|`|\()?", _I)
_USER_VAR_WRITE: Final = re.compile(
    r"(?<!@)@(?!@)\s*(?:[\w$.]+|'_*'|\"_*\"|`[^`]*`)\s*:=|\binto\s*@(?!@)", _I
)
_USER_VAR: Final = re.compile(r"(?<!@)@(?!@)")
_GLOBAL_READ: Final = re.compile(r"@@global\s*\.", _I)
_READ_LOCK: Final = re.compile(r"\bwith\s+read\s+lock\b", _I)
_FOR_EXPORT: Final = re.compile(r"\bfor\s+export\b", _I)
_HANDLER_OPEN: Final = re.compile(r"handler\s+\S+\s+open\b", _I)
_FOR: Final = re.compile(r"\bfor\b", _I)
_START_TRANSACTION: Final = ["start", "transaction"]
_PIN_BY_FIRST_WORD: Final = {
    "prepare": "PREPARE",
    "execute": "EXECUTE",  # EXECUTE IMMEDIATE (MariaDB) too: its SQL is not visible here
    "deallocate": "DEALLOCATE PREPARE",
    "begin": "compound statement",  # BEGIN NOT ATOMIC (MariaDB); its body is split on ';'
    **dict.fromkeys(("if", "while", "loop", "repeat"), "compound statement"),
}

# --- SET ---
_SCOPES: Final = r"(global|session|local|persist|persist_only)"
_SET_TRANSACTION: Final = re.compile(rf"set\s+(?:{_SCOPES}\s+)?transaction\b", _I)
_SCOPE_WORD: Final = re.compile(rf"{_SCOPES}\b\s*", _I)
_SYSTEM_PREFIX: Final = re.compile(rf"@@(?:{_SCOPES}\s*\.\s*)?", _I)
_NAMES: Final = re.compile(r"(?:(names)|character\s+set|charset)\b(?!\s*:?=)", _I)
_IDENT: Final = r"(`[^`]*`|[A-Za-z0-9_$]+)"
_ASSIGNMENT: Final = re.compile(rf"{_IDENT}(?:\s*\.\s*{_IDENT})?\s*:?=", re.ASCII)
_PUNCT: Final = re.compile(r"[(),]")
_USE_NAME: Final = re.compile(r"`((?:[^`]|``)*)`|\"((?:[^\"]|\"\")*)\"|'((?:[^']|'')*)'|([^\s;]+)")


@dataclass(slots=True)
class _Acc:
    """What the statements of one text did so far."""

    pin: str = ""
    sets: list[tuple[str, str]] = field(default_factory=list)
    schema: str | None = None
    next_transaction: bool = False  # a SET TRANSACTION not yet consumed by a BEGIN
    taint: str = ""
    reads: str = ""
    role: bool = False
    read_kinds: int = 0
    written: int = 0  # results the statements so far certainly set (ROW_COUNT | ...)

    def add_pin(self, reason: str) -> None:
        self.pin = self.pin or reason


def classify_bytes(sql: bytes) -> Effect:
    """`classify` for the raw text of a COM_QUERY or COM_STMT_PREPARE.

    Most texts are rejected without decoding. Others are decoded as UTF-8 with
    surrogateescape: `statement.encode("utf-8", "surrogateescape")` gives back the
    client's exact bytes, whatever its character set.
    """
    low = sql.lower()
    if (_SEMICOLON not in low or _SEMICOLON not in low.rstrip(_TRAILING_BYTES)) and (
        _first_word(low) in _PLAIN_BYTES and not _has_trigger(low)
        if COMPILED
        else _PLAIN_START.match(low) is not None and _TRIGGER_BYTES.search(low) is None
    ):
        return NO_EFFECT
    return classify(sql.decode("utf-8", "surrogateescape"))


def _first_word(low: bytes) -> bytes:
    """The leading word after the leading white space, as `_statement` reads it."""
    start = low.lstrip()  # the same object when there is nothing to strip
    end = 0
    while end < len(start) and _NAME_BYTES[start[end]]:
        end += 1
    return start[:end]


def _has_trigger(low: bytes) -> bool:
    """Whether `_TRIGGER_BYTES` finds something in `low`."""
    return _ANCHORED.found_in(low, _trigger_ends)


def _trigger_ends(low: bytes, word: bytes, start: int) -> bool:
    """The rest of the triggers that are more than a word: INTO @, LAST_INSERT_ID(x)."""
    if word == b"@":
        before = len(low[:start].rstrip(_SPACE_BYTES))
        return low[before - 4 : before] == b"into" if before >= 4 else False
    if word == b"last_insert_id":
        return _ARGUMENT.match(low, start + len(word)) is not None
    return True


def _first_word_str(low: str) -> str:
    found = _FIRST_WORD.match(low.lstrip(_WS))
    return found.group() if found is not None else ""


def classify(sql: str) -> Effect:
    """The session effects of `sql` (a COM_QUERY or COM_STMT_PREPARE text)."""
    low = sql.lower()
    if (
        _TRIGGER_STR.search(low) is None
        and _first_word_str(low) in _PLAIN_WORDS
        and (";" not in low or ";" not in low.rstrip(_TRAILING))
    ):
        return NO_EFFECT
    return _classify_cached(sql) if len(sql) <= _CACHE_MAX_LEN else _classify_slow(sql)


def _classify_slow(sql: str) -> Effect:
    effect = _classify_text(sql, escapes=True)
    if "\\" in sql:
        other = _classify_text(sql, escapes=False)
        if other != effect:  # the reading depends on NO_BACKSLASH_ESCAPES
            return Effect(
                effect.pin or "backslash quoting",
                effect.sets,
                effect.schema,
                effect.taint or other.taint,
                effect.reads or other.reads,
                effect.role or other.role,
                effect.read_kinds | other.read_kinds,
            )
    return effect


_classify_cached: Final = lru_cache(maxsize=4096)(_classify_slow)


def _classify_text(sql: str, *, escapes: bool) -> Effect:
    acc = _Acc()
    for stmt in split_statements(sql, backslash_escapes=escapes):
        _statement(acc, stmt, _blank(stmt, escapes))
    if acc.next_transaction:
        acc.add_pin("SET TRANSACTION")
    if not (acc.pin or acc.sets or acc.schema is not None or acc.taint or acc.reads or acc.role):
        return NO_EFFECT  # the same object the pre-check returns: `effect is NO_EFFECT` holds
    return Effect(
        acc.pin, tuple(acc.sets), acc.schema, acc.taint, acc.reads, acc.role, acc.read_kinds
    )


def _statement(acc: _Acc, stmt: str, code: str) -> None:
    words = [w.lower() for w in _WORD.findall(code, 0, 200)[:4]]
    if not words:
        return
    for pattern, reason in _EVERYWHERE:
        if pattern.search(code):
            acc.add_pin(reason)
    for what, kind in _reads(code, words):
        if kind & ~acc.written:  # not what an earlier statement of the text set
            acc.reads = acc.reads or what
            acc.read_kinds |= kind & ~acc.written
    acc.add_pin(acc.reads)  # its later reads must find their statement's connection
    acc.written |= _writes(code, words)
    first = words[0]
    if first == "set":
        _set(acc, stmt, code, words)
        return
    if _USER_VAR_WRITE.search(code):
        acc.add_pin("user variable")
    if first == "use":
        _use(acc, stmt)
    elif (first == "begin" and words[1:3] != ["not", "atomic"]) or words[:2] == _START_TRANSACTION:
        acc.next_transaction = False
    else:
        reason = _reason(code, words)
        acc.add_pin(reason)
        acc.role = acc.role or first in ("call", "execute") or reason == "compound statement"
        if first not in _KNOWN or first == "do":
            word = first.upper() if _PLAIN.fullmatch(first) else "unknown"
            acc.taint = acc.taint or f"{word} statement"


def _reads(code: str, words: list[str]) -> list[tuple[str, int]]:
    """What of the previous statement's results `code` reads, and of which kind."""
    found: list[tuple[str, int]] = []
    for pattern, what, kind in _READS:
        match = pattern.search(code)
        if match is not None:
            found.append((what or f"@@{match.group(1).lower()}", kind))
    second = words[1] if len(words) > 1 else ""
    if words[0] == "show" and second in _SHOW_READS:
        found.append((_SHOW_READS[second], DIAGNOSTICS))
    elif words[0] == "get" and "diagnostics" in words[1:3]:
        found.append(("GET DIAGNOSTICS", DIAGNOSTICS | ROW_COUNT))  # and its ROW_COUNT item
    return found


def _writes(code: str, words: list[str]) -> int:
    """The results a statement certainly sets when it succeeds."""
    first = words[0]
    if first == "get":  # GET DIAGNOSTICS leaves ROW_COUNT() as it was
        return 0
    if first in _TABLE_WRITES:
        return ROW_COUNT | DIAGNOSTICS
    if first == "select":
        return ROW_COUNT | FOUND_ROWS | (DIAGNOSTICS if _from_table(code) else 0)
    return ROW_COUNT


def _from_table(code: str) -> bool:
    """Whether a SELECT reads a table: a FROM outside parentheses, not FROM DUAL."""
    depth = 0
    for match in _FROM_OR_PAREN.finditer(code):
        token = match.group()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth <= 0:
            following = (match.group(1) or "").lower()
            return bool(following) and following != "dual"
    return False


def _reason(code: str, words: list[str]) -> str:
    """Why a statement pins, from its first words ("" = it does not)."""
    first, second = words[0], (words[1] if len(words) > 1 else "")
    if first in _PIN_BY_FIRST_WORD:
        return _PIN_BY_FIRST_WORD[first]
    if first == "lock":
        return "LOCK TABLES" if second in ("table", "tables") else f"LOCK {second.upper()}".strip()
    if first == "flush" and _READ_LOCK.search(code):
        return "FLUSH TABLES WITH READ LOCK"
    if first == "flush" and _FOR_EXPORT.search(code):
        return "FLUSH TABLES FOR EXPORT"
    if first == "create":  # CREATE [OR REPLACE] TEMPORARY TABLE|SEQUENCE
        rest = words[3:] if words[1:3] == ["or", "replace"] else words[1:]
        return "temporary table" if rest[:1] == ["temporary"] else ""
    if first == "drop" and second == "prepare":
        return "DEALLOCATE PREPARE"
    if first == "handler" and _HANDLER_OPEN.match(code):
        return "HANDLER OPEN"
    if first == "xa" and second in ("start", "begin"):
        return "XA START"
    if first in ("call", "get") and _USER_VAR.search(code):
        return "user variable"  # CALL p(@out), GET DIAGNOSTICS @n = NUMBER assign it
    if first == "call":  # a procedure may leave anything in the session
        return "CALL"
    if first == "backup":  # BACKUP STAGE / BACKUP LOCK hold locks in the session
        return f"BACKUP {second.upper()}".strip()
    return ""


def _use(acc: _Acc, stmt: str) -> None:
    match = _USE_NAME.match(stmt.lstrip(_WS)[3:].lstrip(_WS))
    if match is None:
        return
    quoted, double, single, plain = match.groups()
    if quoted is not None:
        acc.schema = quoted.replace("``", "`")
    elif double is not None or single is not None:
        acc.schema = double.replace('""', '"') if double is not None else single.replace("''", "'")
    else:
        acc.schema = plain


def _set(acc: _Acc, stmt: str, code: str, words: list[str]) -> None:
    second = words[1] if len(words) > 1 else ""
    if second == "statement":  # MariaDB SET STATEMENT var=value[, ...] FOR statement
        found = _FOR.search(code)
        if found is not None:
            _statement(acc, stmt[found.end() :].strip(_WS), code[found.end() :].strip(_WS))
        return
    if second == "password" or words[1:3] == ["default", "role"]:
        return  # account settings, not the session's
    if second == "role" or words[1:3] == ["resource", "group"]:
        acc.add_pin("SET ROLE" if second == "role" else "SET RESOURCE GROUP")
        acc.role = acc.role or second == "role"
        return
    transaction = _SET_TRANSACTION.match(code)
    if transaction is not None:
        _set_transaction(acc, stmt, code, transaction)
        return
    scope = "session"
    for start, end in _items(code, 3):
        scope = _assignment(acc, stmt[start:end], code[start:end], scope)


def _set_transaction(acc: _Acc, stmt: str, code: str, match: re.Match[str]) -> None:
    scope = (match.group(1) or "").lower()
    if not scope:
        acc.next_transaction = True
        return
    if scope not in ("session", "local"):
        return
    for start, end in _items(code, match.end()):
        text = stmt[start:end].strip(_WS)
        kind = " ".join(code[start:end].lower().split()[:2])
        if kind.startswith("isolation"):
            acc.sets.append(("transaction_isolation", f"SET SESSION TRANSACTION {text}"))
        elif kind in ("read only", "read write"):
            acc.sets.append(("transaction_read_only", f"SET SESSION TRANSACTION {text}"))
        else:
            acc.add_pin("SET SESSION TRANSACTION")


def _items(code: str, start: int) -> list[tuple[int, int]]:
    """The spans of `code[start:]` between commas outside parentheses."""
    spans: list[tuple[int, int]] = []
    depth, begin = 0, start
    for match in _PUNCT.finditer(code, start):
        char = match.group()
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth <= 0:
            spans.append((begin, match.start()))
            begin = match.end()
    spans.append((begin, len(code)))
    return spans


def _assignment(acc: _Acc, item: str, code: str, scope: str) -> str:
    """One `[scope] name = value` of a SET; returns the scope for the items after it."""
    pos = len(code) - len(code.lstrip(_WS))
    keyword = _SCOPE_WORD.match(code, pos)
    if keyword is not None:
        scope = "session" if keyword.group(1).lower() in ("session", "local") else "global"
        pos = keyword.end()
    own_scope = scope
    if code.startswith("@@", pos):
        prefix = _SYSTEM_PREFIX.match(code, pos)
        assert prefix is not None  # the pattern's scope part is optional
        qualifier = (prefix.group(1) or "session").lower()
        own_scope = "session" if qualifier in ("session", "local") else "global"
        pos = prefix.end()
    elif code.startswith("@", pos):
        acc.add_pin("user variable")
        return scope
    else:
        names = _NAMES.match(code, pos)
        if names is not None:
            key = "names" if names.group(1) else "charset"
            acc.sets.append((key, "SET " + item[pos:].strip(_WS)))
            return scope
    if own_scope == "session":
        _assign_variable(acc, item, code, pos)
    return scope


def _assign_variable(acc: _Acc, item: str, code: str, pos: int) -> None:
    """`name = value` for a session variable: tracked, or pinned for."""
    match = _ASSIGNMENT.match(code, pos)
    if match is None:
        words = _WORD.findall(code, pos)
        acc.add_pin(f"SET {words[0].lower()}" if words else "SET")
        return
    parts = [match.group(1), match.group(2) or ""]
    name = ".".join(p.strip("`").replace("``", "`") for p in parts if p).lower()
    key = ALIASES.get(name, name)
    if key not in TRACKED or key in _PSEUDO:
        acc.add_pin(f"SET {name}")
    elif "@" in _GLOBAL_READ.sub("", code[match.end() :]):
        acc.add_pin(f"SET {name} from a variable")  # would read another session's value
    else:
        acc.sets.append((key, f"SET SESSION {name} = {item[match.end() :].strip(_WS)}"))


def _blank(stmt: str, escapes: bool) -> str:
    """`stmt` with the text of quoted strings and identifiers replaced, length kept."""
    return (_QUOTED_ESC if escapes else _QUOTED_RAW).sub(_blank_one, stmt)


def _blank_one(match: re.Match[str]) -> str:
    text = match.group()
    quote = text[0]
    if quote == "`" and text.endswith("`") and _PLAIN.fullmatch(text, 1, len(text) - 1):
        return text  # `get_lock`, `sql_mode`: still the same word
    if len(text) < 2:
        return text
    return quote + "_" * (len(text) - 2) + (quote if text[-1] == quote else "_")


def split_statements(sql: str, *, backslash_escapes: bool = True) -> list[str]:
    """Split on `;` outside quotes and comments; comments removed, `/*! .. */` kept as code."""
    quoted = _QUOTED_ESC if backslash_escapes else _QUOTED_RAW
    out: list[str] = []
    cur: list[str] = []
    i, in_exec = 0, False
    while True:
        match = _SPECIAL.search(sql, i)  # jump over ordinary text in one step
        if match is None:
            cur.append(sql[i:])
            break
        token, j = match.group(), match.start()
        cur.append(sql[i:j])
        if token == ";":
            out.append("".join(cur))
            cur = []
            i = j + 1
        elif token in ("'", '"', "`"):
            found = quoted.match(sql, j)  # always matches: the quote at least
            i = found.end() if found is not None else len(sql)
            cur.append(sql[j:i])
        elif token == "*/":
            cur.append(" " if in_exec else "*")  # a `*` before a comment: 2*/*c*/3
            i = j + 2 if in_exec else j + 1
            in_exec = False
        else:
            i, in_exec = _comment(sql, j, token, in_exec)
            cur.append("-" if token == "--" and i == j + 1 else " ")
    out.append("".join(cur))
    return [s for s in (part.strip(_WS) for part in out) if s]


def _comment(sql: str, j: int, token: str, in_exec: bool) -> tuple[int, bool]:
    """Where scanning resumes after the comment starting at `j`, and the new in_exec."""
    n = len(sql)
    if token == "/*":
        executable = _EXEC_COMMENT.match(sql, j)
        if executable is not None:
            return executable.end(), True
        end = sql.find("*/", j + 2)
        return (n if end < 0 else end + 2), in_exec
    if token == "--" and j + 2 < n and " " < sql[j + 2] != "\x7f":
        return j + 1, in_exec  # `1--1` is arithmetic: keep the first dash
    end = sql.find("\n", j)
    return (n if end < 0 else end), in_exec

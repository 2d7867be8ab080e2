"""The functions a statement calls, and whether Sluice knows what they leave in the session.

Statement keywords tell the classifier (`sluice.wire.pg.sql`) about SET,
PREPARE, LISTEN and the rest; a function call is where that stops: a user's
function, an extension's or a DO block can take a session advisory lock,
LISTEN, create a temporary table or call set_config(..., false), and nothing in
the statement's words says so. `scan_calls` finds every call in a statement
(whose constants the caller has blanked out) and sorts it:

- known built-ins without session effects: nothing to do;
- built-ins whose session effect is known: a pin reason (session advisory
  locks, setseed), `writes` for nextval/setval (they change what lastval() and
  currval() answer later in the session), set_config with a literal is_local;
- anything else is *opaque*: the proxy checks the connection's state once the
  transaction ends (`sluice.pg.guard`).

Names are matched as PostgreSQL resolves them: unquoted names are folded to
lower case, quoted ones are kept as written (so `"pg_advisory_lock"(1)` is the
built-in and `"Lower"(x)` is not), and `pg_catalog.` is the only schema that
keeps a built-in a built-in. A word followed by a parenthesis is not always a
call (`IN (`, `INSERT INTO t (`, `AS t(a, b)`, `numeric(10, 2)`); the rules
below err towards calling it one, which only costs a check. What no scan of the
text can see (triggers, rules, views, column defaults, user-defined operators
and casts, a user function overloading a built-in's name with other argument
types) is documented as such.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_IDENT: Final = r'(?:"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*)'
_IDENT_RE: Final = re.compile(_IDENT)
# A possibly qualified name right before a parenthesis, not inside another word.
_CALL: Final = re.compile(rf'(?<![\w$."])({_IDENT}(?:\s*\.\s*{_IDENT})*)\s*\(')
_LAST_WORD: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_$]*)\s*$")
_BACK: Final = 40  # characters looked at before a call to tell an alias list from a call

# Reserved and column-name keywords (which cannot name a user's function unquoted)
# that are followed by a parenthesis without being calls, and type names with modifiers.
NOT_CALLS: Final = frozenset(
    """
    all and any array as asc between bigint bit boolean case cast char character check
    coalesce collate constraint current_time current_timestamp dec decimal default desc
    distinct do else end except exists extract fetch float for foreign from greatest
    group grouping having ilike in int integer intersect interval into is join lateral
    least like limit localtime localtimestamp national nchar normalize not nullif numeric
    offset on only or order overlay position precision primary real references returning
    row select similar smallint some substring table then time timestamp to treat trim
    union unique using values varchar when where window with xmlattributes xmlconcat
    xmlelement xmlexists xmlforest xmlparse xmlpi xmlroot xmlserialize
    """.split()  # noqa: SIM905 (a table of words reads best as text)
)
# Unreserved keywords (a user's function may have their name) that are not calls
# only after the given word: `ON CONFLICT (`, `ORDER BY (`, `CHARACTER VARYING(`.
_KEYWORD_AFTER: Final = {
    "conflict": ("on",),
    "by": ("order", "group", "partition"),
    "varying": ("character",),
    "materialized": ("not",),
}

# Words after which `name(` is a column list, a type or a sampling method, not a call.
_NOT_CALL_AFTER: Final = frozenset(
    ("into", "as", "with", "recursive", "copy", "analyze", "analyse", "tablesample")
)

# Built-in functions that leave nothing in the session beyond the transaction.
PURE: Final = frozenset(
    """
    abs acos age array_agg array_append array_cat array_dims array_fill array_length
    array_lower array_position array_positions array_prepend array_remove array_replace
    array_to_json array_to_string array_upper ascii asin atan atan2 avg bit_and bit_length
    bit_or bool_and bool_or btrim cardinality cbrt ceil ceiling char_length
    character_length chr clock_timestamp concat concat_ws convert_from convert_to corr
    cos cot count covar_pop covar_samp cume_dist current_database current_date
    current_schema current_schemas current_setting currval date_bin date_part
    date_trunc decode degrees dense_rank div encode every exp extract factorial
    first_value floor format format_type gcd gen_random_uuid generate_series
    generate_subscripts get_bit get_byte has_column_privilege has_database_privilege
    has_schema_privilege has_table_privilege hashtext host inet_client_addr
    inet_server_addr initcap isfinite json_agg json_array_elements
    json_array_elements_text json_array_length json_build_array json_build_object
    json_each json_each_text json_extract_path json_extract_path_text json_object_agg
    json_object_keys json_populate_record json_populate_recordset json_strip_nulls
    json_to_record json_to_recordset json_typeof jsonb_agg jsonb_array_elements
    jsonb_array_elements_text jsonb_array_length jsonb_build_array jsonb_build_object
    jsonb_each jsonb_each_text jsonb_extract_path jsonb_extract_path_text jsonb_insert
    jsonb_object_agg jsonb_object_keys jsonb_path_exists jsonb_path_match
    jsonb_path_query jsonb_path_query_array jsonb_path_query_first jsonb_populate_record
    jsonb_populate_recordset jsonb_pretty jsonb_set jsonb_strip_nulls jsonb_to_record
    jsonb_to_recordset jsonb_typeof justify_days justify_hours justify_interval lag
    last_value lastval lcm lead length ln log log10 lower lpad ltrim make_date
    make_interval make_time make_timestamp make_timestamptz max md5 min mod mode now
    nth_value ntile num_nonnulls num_nulls octet_length percent_rank
    percentile_cont percentile_disc pg_advisory_unlock pg_advisory_unlock_all
    pg_advisory_unlock_shared pg_advisory_xact_lock pg_advisory_xact_lock_shared
    pg_backend_pid pg_column_size pg_current_xact_id pg_database_size pg_get_viewdef
    pg_is_in_recovery pg_notify pg_postmaster_start_time pg_relation_size pg_size_pretty
    pg_sleep pg_table_size pg_total_relation_size pg_try_advisory_xact_lock
    pg_try_advisory_xact_lock_shared pg_typeof pi power quote_ident quote_literal
    quote_nullable radians random rank regexp_count regexp_instr regexp_like
    regexp_match regexp_matches regexp_replace regexp_split_to_array
    regexp_split_to_table regexp_substr repeat replace reverse round row_number
    row_to_json rpad rtrim scale sha224 sha256 sha384 sha512 sign sin split_part sqrt
    starts_with statement_timestamp stddev stddev_pop stddev_samp string_agg
    string_to_array strpos substr sum tan timeofday timezone to_ascii to_char to_date
    to_hex to_json to_jsonb to_number to_regclass to_regproc to_regtype to_timestamp
    to_tsquery to_tsvector transaction_timestamp translate trunc txid_current unnest
    upper uuid_generate_v4 var_pop var_samp variance version width_bucket
    websearch_to_tsquery plainto_tsquery phraseto_tsquery ts_rank ts_headline
    """.split()  # noqa: SIM905 (a table of words reads best as text)
)

# Built-ins whose session effect a pin covers.
PINS: Final = {
    "pg_advisory_lock": "session advisory lock",
    "pg_advisory_lock_shared": "session advisory lock",
    "pg_try_advisory_lock": "session advisory lock",
    "pg_try_advisory_lock_shared": "session advisory lock",
    "setseed": "setseed()",
}
WRITES: Final = frozenset(("nextval", "setval"))


@dataclass(frozen=True, slots=True)
class Calls:
    """What the calls in one statement do to the session, as far as names tell."""

    pin: str = ""
    opaque: bool = False  # a call whose effects are unknown: check the session afterwards
    writes: bool = False  # nextval/setval: lastval() and currval() answers change


NO_CALLS: Final = Calls()


def scan_calls(code: str) -> Calls:
    """Sort the calls in `code`, a statement whose string and dollar constants are blanked."""
    if "(" not in code:
        return NO_CALLS
    pin, opaque, writes = "", False, False
    for match in _CALL.finditer(code):
        name = _builtin_name(match.group(1))
        if name in PURE or name in NOT_CALLS or _not_a_call(code, match.start(), name):
            continue
        if name in PINS or name in WRITES:
            pin = pin or PINS.get(name, "")
            writes = writes or name in WRITES
        elif name == "set_config":
            local = _literal_arg(code, match.end(), 2)
            pin = pin or ("set_config() for the session" if local == "false" else "")
            opaque = opaque or local not in ("true", "false")
        else:
            opaque = True  # a user's or an extension's function, or one not listed
    if not (pin or opaque or writes):
        return NO_CALLS
    return Calls(pin, opaque, writes or opaque)


def _not_a_call(code: str, start: int, name: str | None) -> bool:
    """A column list (`INTO t (`, `AS t(`, `f(x) t(`), a type (`::numeric(`) or a keyword."""
    before = code[max(0, start - _BACK) : start].rstrip()
    if before.endswith((")", "::")):
        return True
    found = _LAST_WORD.search(before)
    word = found.group(1).lower() if found else ""
    return word in _NOT_CALL_AFTER or word in _KEYWORD_AFTER.get(name or "", ())


def _builtin_name(qualified: str) -> str | None:
    """The name to look up among built-ins and keywords; None if it can only be a function
    of its own (another schema's, or a quoted name spelled like a keyword)."""
    raw = _IDENT_RE.findall(qualified)
    parts = [_fold(part) for part in raw]
    if len(parts) == 2 and parts[0] == "pg_catalog" and parts[1] not in NOT_CALLS:
        return parts[1]
    if len(parts) != 1 or (raw[0].startswith('"') and parts[0] in NOT_CALLS):
        return None
    return parts[0]


def _fold(part: str) -> str:
    return part[1:-1].replace('""', '"') if part.startswith('"') else part.lower()


def _literal_arg(code: str, start: int, index: int) -> str:
    """The `index`-th top-level argument of the call whose '(' ends at `start`, lower-cased."""
    depth, args, begin = 0, [], start
    for pos in range(start, len(code)):
        char = code[pos]
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif char in ",)" and depth == 0:
            args.append(code[begin:pos].strip().lower())
            if char == ")" or len(args) > index:
                break
            begin = pos + 1
    return args[index] if len(args) > index else ""

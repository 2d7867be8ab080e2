"""The PostgreSQL grammar: session settings, transactions, prepared statements, temporary
objects, advisory locks, LISTEN, opaque functions, roles, data (COPY and cursors too)
and errors on purpose.

Schemas `diff_a` and `diff_b` both hold a table `t`, so what an unqualified `t` means
depends on `search_path` (and on a temporary `t`). `diff_a.setcfg(name, value)` calls
`set_config` and `diff_a.grab(k)` takes a session advisory lock, both out of the
proxy's sight. Role `diff_role` may read `diff_a.t` only. Nothing generated is
non-deterministic (no pids, no clock): see `pg_client.py` for the schema.
"""

from __future__ import annotations

import random

from .grammar import Grammar, Rule, action, choice, sql
from .program import ClientSpec, Step

VALUES: dict[str, tuple[str, ...]] = {
    "search_path": ("diff_a", "diff_b", "diff_b, diff_a", "public", '"$user", public'),
    "TimeZone": ("'UTC'", "'Europe/Paris'", "'America/New_York'", "'Asia/Tokyo'"),
    "DateStyle": ("'ISO, MDY'", "'SQL, DMY'", "'German'", "'Postgres, YMD'"),
    "application_name": ("'x1'", "'x2'", "''"),
    "statement_timeout": ("0", "'30s'", "'1h'"),
    "client_encoding": ("'UTF8'", "'LATIN1'", "'WIN1252'"),
    "IntervalStyle": ("'postgres'", "'iso_8601'", "'sql_standard'"),
    "extra_float_digits": ("0", "2", "-3"),
}
TRACKED = tuple(VALUES)
CUSTOM = "myapp.x"
# A custom setting is read as its value or '': whether an empty placeholder exists in a
# session is what no pooler can carry (limitations.toml, "pg-custom-placeholder").
CUSTOM_VALUE = f"SELECT coalesce(current_setting('{CUSTOM}', true), '')"
CLIENTS = 3
# Opaque SQL sets a custom setting for the session under a name of its client's own,
# which only the other clients read: no check can see such a setting, so it does not
# follow its client to another connection (limitations.toml, "pg-custom-from-opaque-sql"),
# but it must never reach anyone else.
OPAQUE_CUSTOM = "myapp.o{}"
KEYS = ("1", "2", "3", "4", "5", "6")

SNAPSHOT = (
    "SELECT current_user, session_user, current_setting('search_path'), "
    "current_setting('TimeZone'), current_setting('DateStyle'), "
    "current_setting('application_name'), current_setting('statement_timeout'), "
    "current_setting('client_encoding'), current_setting('IntervalStyle'), "
    "current_setting('extra_float_digits'), coalesce(current_setting('myapp.x', true), '')"
)
FORMATTED = (
    "SELECT '2021-06-01 12:30:00+00'::timestamptz::text, '1 day 02:03:04'::interval::text, "
    "'2021-06-01'::date::text, 0.1::float8::text"
)
MY_LOCKS = (
    "SELECT objid::int, mode FROM pg_locks WHERE locktype = 'advisory' "
    "AND pid = pg_backend_pid() ORDER BY 1, 2"
)


def _setting(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(TRACKED)
    return name, rng.choice(VALUES[name])


def set_tracked(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    name, value = _setting(rng)
    form = rng.choice(("SET {} = {}", "SET SESSION {} TO {}", "SET LOCAL {} = {}"))
    label = "set_local" if "LOCAL" in form else "set"
    # prepared: a named statement, which the client runs again when it sets that value again
    how = rng.choice(("sql", "sql", "prepared"))
    return Step(client, how, f"{label}:{name}", form.format(name, value), None, ("stmt",))


def reset_tracked(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    name = rng.choice(TRACKED)
    text = rng.choice((f"RESET {name}", f"SET {name} TO DEFAULT"))
    return Step(client, "sql", f"reset:{name}", text, None, ("stmt",))


def show(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    name = rng.choice((*TRACKED, CUSTOM, "role"))
    text = f"SHOW {name}" if name != CUSTOM else _custom_values(client)
    return Step(client, "sql", f"show:{name}", text, None, ("stmt",))


def _custom_values(client: int) -> str:
    """The custom setting, and the other clients' ones that opaque SQL set."""
    others = [OPAQUE_CUSTOM.format(i) for i in range(CLIENTS) if i != client]
    reads = [f"coalesce(current_setting('{name}', true), '')" for name in (CUSTOM, *others)]
    return "SELECT " + ", ".join(reads)


def set_custom(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    value = rng.choice(("'a'", "'b'", "''"))
    forms = {
        "set": f"SET {CUSTOM} = {value}",
        "set_local": f"SET LOCAL {CUSTOM} = {value}",
        "reset": f"RESET {CUSTOM}",
    }
    kind = rng.choice(tuple(forms))
    return Step(client, "sql", f"custom:{kind}", forms[kind], None, ("stmt", "pin"))


def opaque_set(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    """set_config out of the proxy's sight: a DO block, a user function, a SELECT."""
    values = {
        CUSTOM: "fn",
        "TimeZone": "Asia/Tokyo",
        "search_path": "diff_b",
        "application_name": "viaconfig",
    }
    name = rng.choice(tuple(values))
    value = values[name]
    local = rng.random() < 0.25
    how = rng.choice(("do", "function", "select"))
    if name == CUSTOM and how != "select" and (how == "function" or not local):
        name = OPAQUE_CUSTOM.format(client)  # for the session, out of sight (the function's is)
    call = f"set_config('{name}', '{value}', {str(local).lower()})"
    forms = {
        "do": f"DO $$BEGIN PERFORM {call}; END$$",
        "function": f"SELECT diff_a.setcfg('{name}', '{value}')",
        "select": f"SELECT {call}",  # not opaque: set_config(..., false) of it pins
    }
    return Step(client, "sql", f"opaque_{how}:{name}", forms[how], None, ("stmt", "pin"))


def insert(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    table = rng.choice(("diff_a.t", "diff_b.t", "t"))
    how = rng.choice(("sql", "sql", "prepared", "simple"))
    params: list[object] = [rng.randint(1, 9), rng.choice(("p", "q", "r"))]
    text = f"INSERT INTO {table} (id, v) VALUES (%s, %s)"
    return Step(client, how, f"insert:{table}", text, params, ("stmt", "write:t"))


def insert_serial(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    text = "INSERT INTO diff_a.c (v) VALUES (%s) RETURNING id"
    params: list[object] = [rng.choice(("m", "n"))]
    how = rng.choice(("sql", "prepared"))
    return Step(client, how, "insert:diff_a.c", text, params, ("stmt", "write:c"))


def update(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    table = rng.choice(("diff_a.t", "diff_b.t", "t"))
    verb = rng.choice(("UPDATE {} SET v = v || '+' WHERE id = %s", "DELETE FROM {} WHERE id = %s"))
    label = verb.split()[0].lower()
    params: list[object] = [rng.randint(1, 4)]
    return Step(client, "sql", f"{label}:{table}", verb.format(table), params, ("stmt", "write:t"))


def select(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    table = rng.choice(("diff_a.t", "diff_b.t", "t", "diff_a.c", "tmp"))
    how = rng.choice(("sql", "sql", "prepared", "simple"))
    text = f"SELECT id, v FROM {table} ORDER BY id"
    if how == "prepared" and rng.random() < 0.5:
        text, params = f"SELECT v FROM {table} WHERE id = %s", [rng.randint(1, 3)]
        return Step(client, how, f"select_one:{table}", text, params, ("stmt",))
    return Step(client, how, f"select:{table}", text, None, ("stmt",))


def copy(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    """COPY through the protocol's copy mode: rows in (a serial column's default runs
    nextval()), or a table's rows out."""
    kind = rng.choice(("in", "in_serial", "out"))
    if kind == "out":
        table = rng.choice(("diff_a.t", "t", "diff_a.c"))
        text = f"COPY (SELECT id, v FROM {table} ORDER BY id) TO STDOUT"
        return Step(client, "copy_out", f"copy_out:{table}", text, None, ("stmt",))
    if kind == "in_serial":
        rows: list[object] = [[rng.choice(("m", "n"))] for _ in range(rng.randint(1, 2))]
        text = "COPY diff_a.c (v) FROM STDIN"
        return Step(client, "copy_in", "copy_in:diff_a.c", text, rows, ("stmt", "write:c"))
    table = rng.choice(("diff_a.t", "diff_b.t", "t"))
    rows = [[rng.randint(1, 9), "copy"]]
    text = f"COPY {table} (id, v) FROM STDIN"
    return Step(client, "copy_in", f"copy_in:{table}", text, rows, ("stmt", "write:t"))


def cursor(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    """SQL cursors: a plain one lives in its transaction, one WITH HOLD in the session."""
    forms = {
        "declare": ("DECLARE cur CURSOR FOR SELECT id, v FROM diff_a.t ORDER BY id", ()),
        "hold": ("DECLARE held CURSOR WITH HOLD FOR SELECT id, v FROM t ORDER BY id", ("pin",)),
        "fetch": ("FETCH 1 FROM cur", ()),
        "fetch_held": ("FETCH 1 FROM held", ()),
        "close": ("CLOSE ALL", ()),
        "list": ("SELECT name, is_holdable FROM pg_cursors ORDER BY 1", ()),
    }
    kind = rng.choice(tuple(forms))
    text, effects = forms[kind]
    return Step(client, "sql", f"cursor:{kind}", text, None, ("stmt", *effects))


def savepoint(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    text = rng.choice(("SAVEPOINT sp", "ROLLBACK TO SAVEPOINT sp", "RELEASE SAVEPOINT sp"))
    return Step(client, "sql", "savepoint:" + text.split()[0].lower(), text, None, ("stmt",))


def end_txn(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    if not spec.autocommit and rng.random() < 0.6:
        name = rng.choice(("commit", "rollback"))
        return Step(client, name, f"conn_{name}", "", None, ("end",))
    text = rng.choice(("COMMIT", "ROLLBACK", "END", "ABORT"))
    return Step(client, "sql", f"end:{text}", text, None, ("stmt", "end"))


def begin(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    text = rng.choice(("BEGIN", "BEGIN", "START TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    return Step(client, "sql", "begin", text, None, ("stmt", "begin"))


def advisory(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    key = rng.choice(KEYS)
    forms = {
        "lock": (f"SELECT pg_advisory_lock({key})", ("pin", f"lock:{key}")),
        "try": (f"SELECT pg_try_advisory_lock({key})", ("pin", f"try:{key}")),
        "unlock": (f"SELECT pg_advisory_unlock({key})", ("pin", f"peek:{key}")),
        "xact": (f"SELECT pg_advisory_xact_lock({key})", (f"xlock:{key}",)),
        "xact_try": (f"SELECT pg_try_advisory_xact_lock({key})", (f"xtry:{key}",)),
        "function": (f"SELECT diff_a.grab({key})", ("pin", f"lock:{key}")),
        "unlock_all": ("SELECT pg_advisory_unlock_all()", ("pin",)),
    }
    kind = rng.choice(tuple(forms))
    text, effects = forms[kind]
    return Step(client, "sql", f"advisory:{kind}", text, None, ("stmt", *effects))


def listen(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    forms = {
        "listen": ("LISTEN ch", ("pin",)),
        "unlisten": ("UNLISTEN *", ("pin",)),
        "notify": ("NOTIFY ch, 'hello'", ()),
        "pg_notify": ("SELECT pg_notify('ch', 'fn')", ()),
        "channels": ("SELECT pg_listening_channels()", ()),
    }
    kind = rng.choice(tuple(forms))
    text, effects = forms[kind]
    return Step(client, "sql", f"listen:{kind}", text, None, ("stmt", *effects))


def sql_prepare(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    forms = {
        "prepare": "PREPARE p1 AS SELECT id, v FROM t ORDER BY id",
        "execute": "EXECUTE p1",
        "deallocate": "DEALLOCATE p1",
        "deallocate_all": "DEALLOCATE ALL",
        "list": "SELECT name, statement FROM pg_prepared_statements WHERE from_sql ORDER BY 1",
    }
    kind = rng.choice(tuple(forms))
    return Step(client, "sql", f"sql_prepare:{kind}", forms[kind], None, ("stmt", "pin"))


# `diff_a.s` changes shape (a column's type, a column more or less) while clients hold
# statements prepared on it: directly each client's statement is planned again with the
# parameter types its Parse gave, and refused (0A000) if its result type changed. Any use
# of the table counts as a write (`write:s`), so that no step waits on the lock of DDL.
RESHAPE = {
    "text": "ALTER TABLE diff_a.s ALTER COLUMN w TYPE text",
    "int": "ALTER TABLE diff_a.s ALTER COLUMN w TYPE int USING w::int",
    "bigint": "ALTER TABLE diff_a.s ALTER COLUMN w TYPE bigint USING w::bigint",
    "add": "ALTER TABLE diff_a.s ADD COLUMN IF NOT EXISTS x int",
    "drop": "ALTER TABLE diff_a.s DROP COLUMN IF EXISTS x",
}


def reshape(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    kind = rng.choice(tuple(RESHAPE))
    return Step(client, "sql", f"reshape:{kind}", RESHAPE[kind], None, ("stmt", "write:s"))


def shaped(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    """A statement on `diff_a.s`, prepared more often than not."""
    how = rng.choice(("sql", "prepared", "prepared", "simple"))
    forms: dict[str, tuple[str, list[object] | None]] = {
        "all": ("SELECT * FROM diff_a.s ORDER BY id", None),
        "one": ("SELECT w FROM diff_a.s WHERE id = %s", [rng.randint(1, 3)]),
        "upsert": (
            "INSERT INTO diff_a.s (id, w) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE"
            " SET w = excluded.w RETURNING *",
            [rng.randint(1, 4), str(rng.randint(1, 99))],
        ),
    }
    kind = rng.choice(tuple(forms))
    text, params = forms[kind]
    return Step(client, how, f"shaped:{kind}", text, params, ("stmt", "write:s"))


def temp(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    forms = {
        "create": ("CREATE TEMP TABLE IF NOT EXISTS tmp (id int, v text)", ("pin",)),
        "create_t": ("CREATE TEMP TABLE IF NOT EXISTS t (id int PRIMARY KEY, v text)", ("pin",)),
        "insert": ("INSERT INTO tmp VALUES (1, 'tmp')", ()),
        "drop": ("DROP TABLE IF EXISTS pg_temp.tmp", ("pin",)),
    }
    kind = rng.choice(tuple(forms))
    text, effects = forms[kind]
    return Step(client, "sql", f"temp:{kind}", text, None, ("stmt", *effects))


def role(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    text = rng.choice(("SET ROLE diff_role", "RESET ROLE", "SET ROLE NONE"))
    return Step(client, "sql", "role:" + text.split()[-1].lower(), text, None, ("stmt", "pin"))


def discard(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    text = rng.choice(("DISCARD ALL", "RESET ALL", "DISCARD TEMP", "DISCARD PLANS"))
    effects = ("stmt", "pin") if text != "RESET ALL" else ("stmt",)
    return Step(client, "sql", "discard:" + text.split()[1].lower(), text, None, effects)


def clients(rng: random.Random) -> tuple[ClientSpec, ...]:
    """Three psycopg clients, most in autocommit, some with startup settings."""
    made = []
    for index in range(CLIENTS):
        options: dict[str, str] = {}
        if rng.random() < 0.5:
            options["application_name"] = f"c{index}"
        startup = [f"-c {n}={v}" for n, v in _startup(rng)]
        if startup:
            options["options"] = " ".join(startup)
        made.append(ClientSpec("psycopg", rng.random() < 0.75, options))
    return tuple(made)


def _startup(rng: random.Random) -> list[tuple[str, str]]:
    chosen = {
        "search_path": "diff_b",
        "TimeZone": "Europe/Paris",
        "DateStyle": "German",
        "statement_timeout": "1min",
        "myapp.x": "start",
    }
    return [(n, v) for n, v in chosen.items() if rng.random() < 0.2]


RULES: tuple[Rule, ...] = (
    Rule(8, set_tracked),
    Rule(3, reset_tracked),
    Rule(4, show),
    Rule(6, sql("snapshot", SNAPSHOT)),
    Rule(3, sql("formatted", FORMATTED)),
    Rule(3, set_custom),
    Rule(3, opaque_set),
    Rule(6, insert),
    Rule(2, insert_serial),
    Rule(3, update),
    Rule(8, select),
    Rule(2, sql("currval", "SELECT currval('diff_a.c_id_seq')")),
    Rule(5, begin),
    Rule(8, end_txn),
    Rule(3, savepoint),
    Rule(2, copy),
    Rule(2, cursor),
    Rule(4, advisory),
    Rule(2, sql("my_locks", MY_LOCKS)),
    Rule(2, listen),
    Rule(2, sql_prepare),
    Rule(3, temp),
    Rule(2, reshape),
    Rule(5, shaped),
    Rule(2, role),
    Rule(2, discard),
    Rule(1, sql("whoami", "SELECT current_user, session_user")),
    Rule(3, choice(sql("error:div0", "SELECT 1/0"), sql("error:table", "SELECT * FROM nosuch"))),
    Rule(1, sql("error:syntax", "SELEC 1")),
    Rule(3, action("reconnect", "reconnect", "reconnect")),
)

GRAMMAR = Grammar("pg", clients, RULES)

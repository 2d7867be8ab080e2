"""The MySQL/MariaDB grammar: autocommit, transactions and savepoints, session variables,
user variables, databases, data with AUTO_INCREMENT ids, LAST_INSERT_ID and ROW_COUNT,
temporary tables, named locks, roles, prepared statements (SQL and binary protocol),
COM_PING, COM_INIT_DB, COM_RESET_CONNECTION and errors on purpose.

Databases `diff_a` and `diff_b` both hold a table `t`, so an unqualified `t` follows
`USE` (and a temporary `t`). Role `diff_role` may read `diff_a` only. Named locks are
taken with a zero timeout, so they never wait. Clients are PyMySQL or mysql-connector
(its C extension, with a prepared cursor); only mysql-connector can send
COM_RESET_CONNECTION and binary-protocol statements.
"""

from __future__ import annotations

import random

from .grammar import Grammar, Rule, action, sql
from .program import ClientSpec, Step

VALUES: dict[str, tuple[str, ...]] = {
    "sql_mode": ("''", "'ANSI_QUOTES'", "'STRICT_TRANS_TABLES'", "'TRADITIONAL'", "DEFAULT"),
    "time_zone": ("'+00:00'", "'+05:30'", "'-08:00'", "'SYSTEM'"),
    "sql_select_limit": ("1", "DEFAULT"),
    "group_concat_max_len": ("4", "1024"),
    "wait_timeout": ("1000", "DEFAULT"),
    "auto_increment_increment": ("1", "5"),
    "tx_isolation": ("'READ-COMMITTED'", "'REPEATABLE-READ'"),
    "foreign_key_checks": ("0", "1"),
}
DATABASES = ("diff_a", "diff_b")
LOCKS = ("1", "2", "3", "4", "5", "6")

SNAPSHOT = (
    "SELECT DATABASE(), CURRENT_USER(), CURRENT_ROLE(), @@session.sql_mode, "
    "@@session.time_zone, @@session.autocommit, @@session.character_set_client, "
    "@@session.character_set_results, @@session.collation_connection, "
    "@@session.sql_select_limit, @@session.auto_increment_increment, "
    "@@session.tx_isolation, @@session.wait_timeout, @@session.div_precision_increment, "
    "@@in_transaction"
)
FORMATTED = (
    "SELECT FROM_UNIXTIME(86400), CONVERT_TZ('2021-06-01 12:00:00', '+00:00', "
    "@@session.time_zone), 1/3, GROUP_CONCAT(v ORDER BY id) FROM diff_a.t"
)


def set_var(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    name = rng.choice(tuple(VALUES))
    form = rng.choice(("SET SESSION {} = {}", "SET @@session.{} = {}", "SET {} = {}"))
    text = form.format(name, rng.choice(VALUES[name]))
    # prepared (binary protocol): each EXECUTE sets it
    how = "prepared" if spec.library == "connector" and rng.random() < 0.3 else "sql"
    return Step(client, how, f"set:{name}", text, None, ("stmt",))


def set_autocommit(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    on = rng.random() < 0.5
    mode = "on" if on else "off"
    if rng.random() < 0.5:
        return Step(
            client,
            f"autocommit_{mode}",
            f"autocommit_lib:{mode}",
            "",
            None,
            ("stmt", f"autocommit:{mode}"),
        )
    text = f"SET autocommit = {int(on)}"
    return Step(client, "sql", f"autocommit:{mode}", text, None, ("stmt", f"autocommit:{mode}"))


def set_names(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    text = rng.choice(("SET NAMES utf8mb4", "SET NAMES latin1", "SET CHARACTER SET utf8mb4"))
    return Step(client, "sql", "names", text, None, ("stmt",))


def untracked(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    text = rng.choice(
        (
            "SET SESSION div_precision_increment = 2",
            "SET SESSION div_precision_increment = DEFAULT",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        )
    )
    return Step(client, "sql", "set_other", text, None, ("stmt", "pin"))


def user_var(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    forms = {
        "set": f"SET @a = {rng.randint(1, 9)}",
        "assign": "SELECT @a := COALESCE(@a, 0) + 1",
        "read": "SELECT @a, @b",
        "into": "SELECT COUNT(*) INTO @b FROM t",
    }
    kind = rng.choice(tuple(forms))
    return Step(client, "sql", f"uservar:{kind}", forms[kind], None, ("stmt", "pin"))


def use_db(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    db = rng.choice(DATABASES)
    if rng.random() < 0.4:
        return Step(client, "select_db", "init_db", db, None, ("stmt",))
    return Step(client, "sql", "use", f"USE {db}", None, ("stmt",))


def insert(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    table = rng.choice(("diff_a.t", "diff_b.t", "t"))
    how = "prepared" if spec.library == "connector" and rng.random() < 0.4 else "sql"
    if rng.random() < 0.3:
        text = f"INSERT INTO {table} (id, v) VALUES (%s, %s)"
        params: list[object] = [rng.randint(1, 6), rng.choice(("p", "q"))]
        return Step(client, how, f"insert_id:{table}", text, params, ("stmt", "write:t"))
    text = f"INSERT INTO {table} (v) VALUES (%s)"
    params = [rng.choice(("p", "q", "r"))]
    return Step(client, how, f"insert:{table}", text, params, ("stmt", "write:t"))


def update(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    table = rng.choice(("diff_a.t", "diff_b.t", "t"))
    verb = rng.choice(
        ("UPDATE {} SET v = CONCAT(v, '+') WHERE id = %s", "DELETE FROM {} WHERE id = %s")
    )
    params: list[object] = [rng.randint(1, 4)]
    label = verb.split()[0].lower()
    return Step(client, "sql", f"{label}:{table}", verb.format(table), params, ("stmt", "write:t"))


def select(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    table = rng.choice(("diff_a.t", "diff_b.t", "t", "tmp"))
    if spec.library == "connector" and rng.random() < 0.4:
        text = f"SELECT id, v FROM {table} WHERE id >= %s ORDER BY id"
        return Step(client, "prepared", f"select:{table}", text, [1], ("stmt",))
    return Step(
        client, "sql", f"select:{table}", f"SELECT id, v FROM {table} ORDER BY id", None, ("stmt",)
    )


def counters(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    forms = {
        "last_insert_id": "SELECT LAST_INSERT_ID()",
        "row_count": "SELECT ROW_COUNT()",
        "both": "SELECT LAST_INSERT_ID(), ROW_COUNT()",
        "set_last_insert_id": "SELECT LAST_INSERT_ID(42)",
    }
    kind = rng.choice(tuple(forms))
    how = "prepared" if spec.library == "connector" and rng.random() < 0.3 else "sql"
    # Documented pins: reads of the previous statement's results, LAST_INSERT_ID(expr).
    effects = ("stmt",) if kind == "last_insert_id" else ("stmt", "pin")
    return Step(client, how, f"counter:{kind}", forms[kind], None, effects)


def found_rows(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    if rng.random() < 0.5:
        text = "SELECT SQL_CALC_FOUND_ROWS id FROM diff_a.t ORDER BY id LIMIT 1"
        return Step(client, "sql", "calc_found_rows", text, None, ("stmt", "pin", "mark:found"))
    text = "SELECT FOUND_ROWS()"
    return Step(client, "sql", "found_rows", text, None, ("stmt", "pin", "needs:found"))


def temp(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    forms = {
        "create": ("CREATE TEMPORARY TABLE IF NOT EXISTS tmp (id INT, v VARCHAR(20))", ("pin",)),
        "create_t": (
            "CREATE TEMPORARY TABLE IF NOT EXISTS t (id INT PRIMARY KEY, v VARCHAR(20))",
            ("pin",),
        ),
        "insert": ("INSERT INTO tmp VALUES (1, 'tmp')", ()),
        "drop": ("DROP TEMPORARY TABLE IF EXISTS tmp", ("pin",)),
    }
    kind = rng.choice(tuple(forms))
    text, effects = forms[kind]
    return Step(client, "sql", f"temp:{kind}", text, None, ("stmt", *effects))


def named_lock(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    key = rng.choice(LOCKS)
    name = f"'diff_lock_{key}'"
    forms = {
        "get": (f"SELECT GET_LOCK({name}, 0)", ("pin", f"try:{key}")),
        "release": (f"SELECT RELEASE_LOCK({name})", ("pin", f"peek:{key}")),
        "is_free": (f"SELECT IS_FREE_LOCK({name})", (f"peek:{key}",)),
        "release_all": ("SELECT RELEASE_ALL_LOCKS()", ("pin",)),
    }
    kind = rng.choice(tuple(forms))
    text, effects = forms[kind]
    return Step(client, "sql", f"lock:{kind}", text, None, ("stmt", *effects))


def begin(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    if rng.random() < 0.3:
        return Step(client, "begin", "begin_lib", "", None, ("stmt", "begin"))
    text = rng.choice(("BEGIN", "START TRANSACTION", "START TRANSACTION READ ONLY"))
    return Step(client, "sql", "begin", text, None, ("stmt", "begin"))


def end_txn(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    name = rng.choice(("commit", "rollback"))
    if rng.random() < 0.4:
        return Step(client, name, f"{name}_lib", "", None, ("stmt", "end"))
    return Step(client, "sql", name, name.upper(), None, ("stmt", "end"))


def savepoint(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    text = rng.choice(("SAVEPOINT sp", "ROLLBACK TO SAVEPOINT sp", "RELEASE SAVEPOINT sp"))
    return Step(client, "sql", "savepoint:" + text.split()[0].lower(), text, None, ("stmt",))


def sql_prepare(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    forms = {
        "prepare": "PREPARE s1 FROM 'SELECT id, v FROM t ORDER BY id'",
        "execute": "EXECUTE s1",
        "deallocate": "DEALLOCATE PREPARE s1",
    }
    kind = rng.choice(tuple(forms))
    return Step(client, "sql", f"sql_prepare:{kind}", forms[kind], None, ("stmt", "pin"))


def role(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    text = rng.choice(("SET ROLE diff_role", "SET ROLE NONE"))
    return Step(client, "sql", "role:" + text.split()[-1].lower(), text, None, ("stmt", "pin"))


def errors(rng: random.Random, client: int, spec: ClientSpec) -> Step:
    forms = {
        "table": "SELECT * FROM nosuch",
        "syntax": "SELEC 1",
        "column": "SELECT nosuch FROM diff_a.t",
        "div0": "INSERT INTO diff_a.t (v) VALUES (1/0)",
        "warning": "SELECT 1/0",
    }
    kind = rng.choice(tuple(forms))
    effects = ("stmt", "write:t") if kind == "div0" else ("stmt",)
    return Step(client, "sql", f"error:{kind}", forms[kind], None, effects)


def reset_connection(rng: random.Random, client: int, spec: ClientSpec) -> Step | None:
    if spec.library != "connector":
        return None
    return Step(client, "reset_connection", "reset_connection", "", None, ("stmt", "reset"))


def clients(rng: random.Random) -> tuple[ClientSpec, ...]:
    """Three clients, PyMySQL or mysql-connector, most in autocommit, in either database."""
    made = []
    for _ in range(3):
        library = rng.choice(("pymysql", "connector"))
        options = {"database": rng.choice(DATABASES)}
        if rng.random() < 0.2:
            options["charset"] = "latin1"
        made.append(ClientSpec(library, rng.random() < 0.75, options))
    return tuple(made)


RULES: tuple[Rule, ...] = (
    Rule(8, set_var),
    Rule(4, set_autocommit),
    Rule(2, set_names),
    Rule(2, untracked),
    Rule(7, sql("snapshot", SNAPSHOT)),
    Rule(2, sql("formatted", FORMATTED)),
    Rule(3, user_var),
    Rule(4, use_db),
    Rule(8, insert),
    Rule(3, update),
    Rule(8, select),
    Rule(6, counters),
    Rule(1, found_rows),
    Rule(3, temp),
    Rule(3, named_lock),
    Rule(5, begin),
    Rule(8, end_txn),
    Rule(3, savepoint),
    Rule(2, sql_prepare),
    Rule(2, role),
    Rule(3, errors),
    Rule(1, sql("show_warnings", "SHOW WARNINGS", "pin")),
    Rule(3, action("ping", "ping", "stmt")),
    Rule(2, reset_connection),
    Rule(3, action("reconnect", "reconnect", "reconnect")),
)

GRAMMAR = Grammar("mysql", clients, RULES)

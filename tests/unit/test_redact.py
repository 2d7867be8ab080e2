"""`observe.redact`: statements as debug logging writes them, for both engines.

Each sensitive case names the secret that must not survive and what must: the
statement stays readable (its verb and names), only the secret goes.
"""

from __future__ import annotations

import pytest

from sluice.observe.redact import DEFAULT_LIMIT, PLACEHOLDER, is_sensitive, redact

SECRET = "S3cr3t-Pw"

# (statement with SECRET in it, text that must remain)
SENSITIVE = [
    # PostgreSQL
    (f"CREATE ROLE app LOGIN PASSWORD '{SECRET}'", "CREATE ROLE app LOGIN PASSWORD"),
    (f"ALTER ROLE app WITH ENCRYPTED PASSWORD '{SECRET}' VALID UNTIL 'x'", "ALTER ROLE app"),
    (f"alter user app password E'{SECRET}\\'s'", "alter user app password"),
    (f"CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'a', password '{SECRET}')", "OPTIONS"),
    (f"SELECT dblink_connect('host=db user=app password={SECRET}')", "dblink_connect("),
    (f"CREATE SUBSCRIPTION s CONNECTION 'dbname=x password={SECRET}' PUBLICATION p", "CONNECTION"),
    (f"UPDATE users SET pw = crypt('{SECRET}', gen_salt('bf'))", "UPDATE users SET pw"),
    (f"SELECT pgp_sym_encrypt('data', $${SECRET}$$)", "pgp_sym_encrypt("),
    (f"SELECT pgp_sym_decrypt(x, $k${SECRET}$k$) FROM t", "FROM t"),
    (f"ALTER ROLE app PASSWORD '{SECRET}' -- rotate {SECRET}", "ALTER ROLE app"),
    (f"ALTER ROLE app /* {SECRET} */ PASSWORD 'x'", "ALTER ROLE app"),
    (f"ALTER ROLE app PASSWORD 'unterminated {SECRET}", "ALTER ROLE app PASSWORD"),
    (f"INSERT INTO api_tokens VALUES ('{SECRET}')", "INSERT INTO api_tokens VALUES"),
    # MySQL / MariaDB
    (f"CREATE USER 'app'@'%' IDENTIFIED BY '{SECRET}'", "CREATE USER"),
    (f"ALTER USER app IDENTIFIED WITH mysql_native_password BY '{SECRET}'", "IDENTIFIED WITH"),
    (f"GRANT ALL ON *.* TO 'a'@'h' IDENTIFIED BY \"{SECRET}\"", "GRANT ALL ON *.* TO"),
    (f"SET PASSWORD FOR 'app'@'%' = PASSWORD('{SECRET}')", "SET PASSWORD FOR"),
    (f"set password = '{SECRET}'", "set password ="),
    (f"CHANGE MASTER TO MASTER_USER='r', MASTER_PASSWORD='{SECRET}'", "CHANGE MASTER TO"),
    (f"SELECT AES_ENCRYPT('data', '{SECRET}')", "AES_ENCRYPT("),
    (f"ALTER USER app IDENTIFIED BY 'it\\'s {SECRET}'", "ALTER USER app"),
    (f"ALTER USER app IDENTIFIED BY 'it''s {SECRET}'", "ALTER USER app"),
    (f"ALTER USER app IDENTIFIED BY 'x' # {SECRET}", "ALTER USER app"),
    (f"INSERT INTO creds VALUES ('{SECRET}', 'password')", "INSERT INTO creds VALUES"),
]


@pytest.mark.parametrize(("sql", "kept"), SENSITIVE)
def test_secrets_are_hidden_and_the_statement_stays_readable(sql: str, kept: str) -> None:
    out = redact(sql.encode())
    assert SECRET not in out
    assert SECRET[2:7] not in out  # no piece of it either
    assert out.startswith(kept) or kept in out
    assert PLACEHOLDER in out


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM orders WHERE status = 'shipped'",
        "INSERT INTO t (a, b) VALUES ('x', 2)",
        "SET search_path = 'app'",
        "SELECT $1::text",
        "UPDATE accounts SET balance = balance - 1 WHERE id = 7",
    ],
)
def test_other_statements_are_logged_as_sent(sql: str) -> None:
    assert not is_sensitive(sql.encode())
    assert redact(sql.encode()) == sql


def test_a_line_stays_one_line_and_bounded() -> None:
    sql = b"SELECT 1,\r\n\t2 \x1b[31m\n-- x\nFROM t"
    assert redact(sql) == "SELECT 1, 2 [31m -- x FROM t"
    long = b"SELECT '" + b"a" * 100_000 + b"'"
    out = redact(long)
    assert len(out) <= DEFAULT_LIMIT + 30 and out.endswith("... (100009 bytes)")
    assert redact(b"SELECT 12345", limit=6) == "SELECT... (12 bytes)"


def test_a_secret_beyond_the_window_still_hides_what_is_shown() -> None:
    # the sensitive word comes after the part that is logged: the literals shown are hidden
    sql = f"INSERT INTO t VALUES ('{SECRET}'" + ", 'x'" * 2000 + ") -- password"
    out = redact(sql.encode())
    assert SECRET not in out and out.startswith("INSERT INTO t VALUES ('***'")


def test_bytes_that_are_not_utf8_do_not_raise() -> None:
    out = redact(b"SELECT '\xff\xfe' AS x")
    assert out.startswith("SELECT '") and out.endswith("' AS x")

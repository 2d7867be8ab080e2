"""`python -m bench.relayloop`: the per-message work of a lent connection, without sockets.

Each scenario replays one transaction's traffic through the real codecs many
times, as the relay does it: the client's bytes through the framing reader, the
SQL through the session-effect classifier, the request into the reply tracker,
the server's bytes back through the tracker (for MySQL, through the reply
stream, which walks the packets' headers and forwards the bytes as received),
until the tracker says the connection is idle again. No event loop, no sockets,
no session objects: what is left is the wire layer's share of a transaction, the
part that compiling it can speed up.

Scenarios (canned traffic, a different key in every transaction):

- `pg-simple`: pgbench -S: a Query, then RowDescription, DataRow,
  CommandComplete, ReadyForQuery;
- `pg-extended`: pgbench -S -M extended: Parse, Bind, Describe, Execute, Sync,
  then ParseComplete, BindComplete, RowDescription, DataRow, CommandComplete,
  ReadyForQuery;
- `mysql-query`: sysbench oltp_point_select as a text COM_QUERY, answered with
  a column count, one column definition, a row and the end-of-rows OK
  (CLIENT_DEPRECATE_EOF);
- `mysql-execute`: the same as a COM_STMT_EXECUTE (sysbench's default),
  answered with a binary row.

`--callgrind` runs each scenario under `valgrind --tool=callgrind` twice (with
no transactions and with `--callgrind-txns`) and reports the difference in
instructions per transaction: unlike wall time, it does not move with the load
of a shared machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sluice.wire.mysql import constants as c
from sluice.wire.mysql import replies as rp
from sluice.wire.mysql import sql as my_sql
from sluice.wire.mysql.messages import OkPacket, build_ok
from sluice.wire.mysql.packets import PacketReader, frame, lenenc_str
from sluice.wire.pg import messages as m
from sluice.wire.pg import responses as r
from sluice.wire.pg import sql as pg_sql
from sluice.wire.pg.framing import MessageReader

KEYS = 1000  # distinct keys cycled through (texts with literals differ every time)
MAX_SIZE = 64 * 1024 * 1024
Loop = Callable[[int], None]

# ---- PostgreSQL ---------------------------------------------------------------

_PG_SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"
_PG_ROW_DESC = m.message(
    b"T",
    b"\x00\x01abalance\x00"
    + bytes.fromhex("00004000")  # table oid
    + b"\x00\x03"  # column number
    + bytes.fromhex("00000017")  # int4
    + b"\x00\x04\xff\xff\xff\xff\x00\x00",
)


def _pg_reply(first: bytes, key: int) -> bytes:
    value = str(key % 5000 - 2500).encode()
    row = m.message(b"D", b"\x00\x01" + len(value).to_bytes(4, "big") + value)
    return first + _PG_ROW_DESC + row + m.command_complete("SELECT 1") + m.READY_IDLE


def pg_simple(count: int) -> None:
    queries = [m.query(_PG_SELECT.format(key * 7919 % 100000 + 1)) for key in range(KEYS)]
    replies = [_pg_reply(b"", key) for key in range(KEYS)]
    reader = MessageReader(MAX_SIZE)
    tracker = r.ResponseTracker(MAX_SIZE)
    classify = pg_sql.classify_bytes
    no_effect = pg_sql.NO_EFFECT
    sent = 0
    for i in range(count):
        key = i % KEYS
        reader.feed(queries[key])
        msg = reader.next()
        assert msg is not None and msg[0] == 81  # 'Q'
        if classify(msg[5:-1]) is not no_effect:
            raise AssertionError("pgbench -S classified as changing the session")
        tracker.push(r.QUERY)
        sent += len(b"".join([msg]))
        out = tracker.feed(replies[key])
        if len(out) != len(replies[key]) or not tracker.idle:
            raise AssertionError("reply not passed through whole")


def pg_extended(count: int) -> None:
    batches = []
    for key in range(KEYS):
        text = _PG_SELECT.format(key * 7919 % 100000 + 1)[:-1].encode()
        batches.append(
            m.parse(b"", text + b"\x00\x00\x00")
            + m.message(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x00")
            + m.message(b"D", b"P\x00")
            + m.message(b"E", b"\x00\x00\x00\x00\x00")
            + m.SYNC
        )
    replies = [_pg_reply(b"1\x00\x00\x00\x042\x00\x00\x00\x04", key) for key in range(KEYS)]
    reader = MessageReader(MAX_SIZE)
    tracker = r.ResponseTracker(MAX_SIZE)
    classify = pg_sql.classify_bytes
    no_effect = pg_sql.NO_EFFECT
    kinds = {80: r.PARSE, 66: r.BIND, 68: r.DESCRIBE_PORTAL, 69: r.EXECUTE, 83: r.SYNC}
    for i in range(count):
        key = i % KEYS
        reader.feed(batches[key])
        out: list[bytes] = []
        while (msg := reader.next()) is not None:
            kind = msg[0]
            if kind == 80:  # Parse: the statement's text follows its (empty) name
                end = msg.index(b"\x00", 6)
                if classify(msg[6:end]) is not no_effect:
                    raise AssertionError("pgbench -S classified as changing the session")
                tracker.push_parse(r.PARSE, b"")
            else:
                tracker.push(kinds[kind])
            out.append(msg)
        b"".join(out)
        sent = tracker.feed(replies[key])
        if len(sent) != len(replies[key]) or not tracker.idle:
            raise AssertionError("reply not passed through whole")


# ---- MySQL --------------------------------------------------------------------

_MY_SELECT = "SELECT c FROM sbtest1 WHERE id={}"
_MY_COLUMN = b"".join(
    lenenc_str(part) for part in (b"def", b"sbtest", b"sbtest1", b"sbtest1", b"c", b"c")
) + bytes.fromhex("0c2d00e0010000fe000000" + "0000")
_MY_END = build_ok(OkPacket(status=c.SERVER_STATUS_AUTOCOMMIT), header=c.EOF_HEADER)


def _my_value(key: int) -> bytes:
    return (b"%011d-" % key) * 10  # sysbench's c column: 120 characters


def _my_reply(row: bytes) -> bytes:
    return frame(b"\x01", 1) + frame(_MY_COLUMN, 2) + frame(row, 3) + frame(_MY_END, 4)


def _my_loop(commands: list[bytes], replies: list[bytes], count: int, text: bool) -> None:
    client = PacketReader(MAX_SIZE)
    tracker = rp.ReplyTracker(c.CLIENT_DEPRECATE_EOF)
    server = rp.ReplyStream(tracker, MAX_SIZE)
    classify = my_sql.classify_bytes
    no_effect = my_sql.NO_EFFECT
    for i in range(count):
        key = i % KEYS
        client.feed(commands[key])
        packet = client.next()
        assert packet is not None
        payload = packet[1]
        if text and classify(payload[1:]) is not no_effect:
            raise AssertionError("a point select classified as changing the session")
        tracker.expect(payload[0])
        frame(payload, 0)
        server.feed(replies[key])
        done = 0
        while (flags := server.next()) != rp.NONE:
            done |= flags & rp.DONE
        if not done or not tracker.idle or len(server.take()) != len(replies[key]):
            raise AssertionError("reply not relayed whole")


def mysql_query(count: int) -> None:
    commands, replies = [], []
    for key in range(KEYS):
        sql = _MY_SELECT.format(key * 7919 % 100000 + 1).encode()
        commands.append(frame(bytes((c.COM_QUERY,)) + sql, 0))
        replies.append(_my_reply(lenenc_str(_my_value(key))))
    _my_loop(commands, replies, count, text=True)


def mysql_execute(count: int) -> None:
    commands, replies = [], []
    for key in range(KEYS):
        params = b"\x00\x01\x03\x00"  # NULL bitmap, types follow, one LONG
        execute = bytes((c.COM_STMT_EXECUTE,)) + (1).to_bytes(4, "little") + b"\x00"
        execute += (1).to_bytes(4, "little") + params + (key + 1).to_bytes(4, "little")
        commands.append(frame(execute, 0))
        replies.append(_my_reply(b"\x00\x00" + lenenc_str(_my_value(key))))
    _my_loop(commands, replies, count, text=False)


SCENARIOS: dict[str, Loop] = {
    "pg-simple": pg_simple,
    "pg-extended": pg_extended,
    "mysql-query": mysql_query,
    "mysql-execute": mysql_execute,
}


# ---- measuring ----------------------------------------------------------------


def wall_ns(loop: Loop, txns: int, repeat: int) -> float:
    """The best of `repeat` runs of `txns` transactions, in ns per transaction."""
    loop(KEYS)  # warm up: caches, first-call costs
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter_ns()
        loop(txns)
        best = min(best, (time.perf_counter_ns() - started) / txns)
    return best


def callgrind_ir(scenario: str, txns: int) -> float:
    """Instructions per transaction under callgrind (a run of `txns` minus a run of 0)."""
    counts = []
    for n in (0, txns):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "callgrind.out"
            cmd = [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.relayloop",
                "--only",
                scenario,
                "--txns",
                str(n),
                "--repeat",
                "1",
                "--no-warmup",
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            found = re.search(r"Collected : (\d+)", done.stderr)
            if found is None:
                raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr}")
            counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / txns


def build_kind() -> str:
    """Whether the wire modules imported are compiled (mypyc) or interpreted."""
    from sluice.wire.pg import responses

    return "compiled" if not responses.__file__.endswith(".py") else "interpreted"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--txns", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-warmup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    parser.add_argument("--callgrind-txns", type=int, default=5000)
    args = parser.parse_args()
    names = args.only or list(SCENARIOS)
    if args.no_warmup:  # one plain run (what --callgrind runs under valgrind)
        for name in names:
            SCENARIOS[name](args.txns)
        return
    print(f"wire modules: {build_kind()}; python {sys.version.split()[0]}; pid {os.getpid()}")
    for name in names:
        line = f"{name:14} {wall_ns(SCENARIOS[name], args.txns, args.repeat):8.0f} ns/txn"
        if args.callgrind:
            line += f"  {callgrind_ir(name, args.callgrind_txns):9.0f} Ir/txn"
        print(line, flush=True)


if __name__ == "__main__":
    main()

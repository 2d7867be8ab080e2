"""`python -m bench.mysqlreply`: the MySQL reply path without sockets, in ns per reply.

Canned server replies (a point select and a 100-row result, binary and text
protocol, as MariaDB frames them with CLIENT_DEPRECATE_EOF) go through what the
relay does with a reply that arrived in one read, two ways:

- `raw`: `ReplyStream` walks the headers, the tracker sees the packets it must
  classify, and the bytes received are what goes to the client;
- `reframed`: the earlier way, kept here for comparison: `PacketReader` copies
  out every packet, the tracker sees each one, and each is framed again.

Both also do the relay's per-packet work on the packets that end a statement
(the insert id of an OK, the warning count of an end packet). Timings on a
shared machine vary; `--iterations N --case C --path P` runs one case alone,
for an instruction count that does not:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m bench.mysqlreply --case binary_point --path raw --iterations 2000

and the same with `--iterations 0`: the difference over 2000 is per reply.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from sluice.wire.mysql import constants as c
from sluice.wire.mysql import replies as rp
from sluice.wire.mysql.messages import OkPacket, build_ok, ok_insert_id
from sluice.wire.mysql.packets import PacketReader, frame, lenenc_int, lenenc_str

CAPABILITIES = c.CLIENT_PROTOCOL_41 | c.CLIENT_DEPRECATE_EOF
_LOOK = rp.OK | rp.RESULT_END | rp.ERROR


def column(name: bytes, kind: int, length: int) -> bytes:
    """A column definition as MariaDB sends it for a sysbench table's column."""
    parts = [lenenc_str(x) for x in (b"def", b"sbtest", b"sbtest1", b"sbtest1", name, name)]
    fixed = bytes((0x0C,)) + (8).to_bytes(2, "little") + length.to_bytes(4, "little")
    fixed += bytes((kind,)) + b"\x00\x00\x00\x00\x00"
    return b"".join(parts) + fixed


def reply(columns: list[bytes], rows: list[bytes]) -> bytes:
    payloads = [lenenc_int(len(columns)), *columns, *rows]
    payloads.append(build_ok(OkPacket(status=c.SERVER_STATUS_AUTOCOMMIT), header=0xFE))
    return b"".join(frame(p, seq) for seq, p in enumerate(payloads, 1))


def _c_value(i: int) -> bytes:
    return b"-".join(b"%011d" % (i * 7919 + k) for k in range(10))[:119]


def _binary_row(i: int, values: list[bytes]) -> bytes:
    null_bitmap = bytes((len(values) + 7 + 2) // 8)
    return b"\x00" + null_bitmap + b"".join(lenenc_str(v) for v in values)


CASES = {
    "binary_point": (
        c.COM_STMT_EXECUTE,
        reply([column(b"c", 0xFE, 480)], [_binary_row(0, [_c_value(1)])]),
    ),
    "binary_100_rows": (
        c.COM_STMT_EXECUTE,
        reply(
            [column(b"id", 0x03, 11), column(b"c", 0xFE, 480)],
            [b"\x00\x00" + i.to_bytes(4, "little") + lenenc_str(_c_value(i)) for i in range(100)],
        ),
    ),
    "text_point": (
        c.COM_QUERY,
        reply([column(b"c", 0xFE, 480)], [lenenc_str(_c_value(1))]),
    ),
    "text_100_rows": (
        c.COM_QUERY,
        reply(
            [column(b"id", 0x03, 11), column(b"c", 0xFE, 480)],
            [lenenc_str(b"%d" % i) + lenenc_str(_c_value(i)) for i in range(100)],
        ),
    ),
}


def raw_path(command: int, data: bytes) -> Callable[[], bytes]:
    tracker = rp.ReplyTracker(CAPABILITIES)
    replies = rp.ReplyStream(tracker, 1 << 24)

    def one() -> bytes:
        tracker.expect(command)
        replies.feed(data)
        while (flags := replies.next(False, False)) != rp.NONE:
            payload = replies.payload
            if flags & rp.OK:
                ok_insert_id(payload)
            if flags & _LOOK:
                tracker.warnings(payload, flags)
        return replies.take()

    return one


def reframed_path(command: int, data: bytes) -> Callable[[], bytes]:
    tracker = rp.ReplyTracker(CAPABILITIES)
    reader = PacketReader(1 << 24)

    def one() -> bytes:
        tracker.expect(command)
        reader.feed(data)
        out = []
        while (packet := reader.next()) is not None:
            seq, payload = packet
            flags = tracker.feed(payload)
            out.append(frame(payload, seq))
            if flags:
                if flags & rp.OK:
                    ok_insert_id(payload)
                if flags & _LOOK:
                    tracker.warnings(payload, flags)
        return b"".join(out)

    return one


PATHS = {"raw": raw_path, "reframed": reframed_path}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--path", choices=sorted(PATHS))
    parser.add_argument("--iterations", type=int, default=0, help="run one case N times")
    parser.add_argument("--seconds", type=float, default=0.5, help="per timing round")
    args = parser.parse_args()
    for command, data in CASES.values():
        for make in PATHS.values():
            assert make(command, data)() == data  # both forward the reply unchanged
    if args.iterations or args.case:
        command, data = CASES[args.case or "binary_point"]
        one = PATHS[args.path or "raw"](command, data)
        for _ in range(args.iterations):
            one()
        return
    print(f"{'case':<16} {'bytes':>6} " + " ".join(f"{p + ' ns':>12}" for p in PATHS))
    for name, (command, data) in CASES.items():
        best = {}
        for path, make in PATHS.items():
            one = make(command, data)
            best[path] = min(_ns_per_call(one, args.seconds) for _ in range(5))
        print(f"{name:<16} {len(data):>6} " + " ".join(f"{best[p]:>12.0f}" for p in PATHS))


def _ns_per_call(one: Callable[[], bytes], seconds: float) -> float:
    count = 0
    started = time.perf_counter()
    deadline = started + seconds / 5
    while (now := time.perf_counter()) < deadline:
        for _ in range(100):
            one()
        count += 100
    return (now - started) * 1e9 / count


if __name__ == "__main__":
    main()

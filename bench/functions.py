"""The function rows: how long `sluice server` takes to invoke a Lambda function, cold and warm.

The system is `sluice server` started afresh for the row (its own data directory), with one
function made as a user makes it (boto3: a role Lambda may assume, a zip whose handler returns
its event, the default 128 MB). Both rows time `lambda.invoke` calls one after another, as a
client sees them: the HTTPS-less round trip to the server, SigV4 and IAM checks, and the
invocation in an execution environment.

- cold start: before each timed call, UpdateFunctionConfiguration changes an environment
  variable (not timed), so no environment may be reused and every call starts a new one: a
  process, its sandbox (namespace, cgroup, /opt where the host allows them), the runtime's
  init phase. The Init Duration of each REPORT line is kept beside the call's latency.
- warm invoke: one untimed call starts an environment; every timed call then reuses it.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import statistics
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.systems import Endpoint
from sluice.devtools.controlplane import SluiceServer

FUNCTION = "bench-function"
HANDLER = "def handler(event, context):\n    return event\n"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}  # fmt: skip
_INIT = re.compile(r"Init Duration: ([0-9.]+) ms")
_SANDBOX = re.compile(r"function environments: (/opt .*)")
_UPDATE_TIMEOUT = 30.0


@dataclass
class Latencies:
    """Milliseconds per timed call, and the REPORT lines' Init Durations (cold rows)."""

    calls_ms: list[float] = field(default_factory=list)
    init_ms: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        calls = sorted(self.calls_ms)
        fields: dict[str, Any] = {
            "invokes": len(calls),
            "latency_p50_ms": round(percentile(calls, 50), 2) if calls else None,
            "latency_p99_ms": round(percentile(calls, 99), 2) if calls else None,
            "latency_mean_ms": round(statistics.fmean(calls), 2) if calls else None,
        }
        if self.init_ms:
            fields["init_duration_p50_ms"] = round(percentile(sorted(self.init_ms), 50), 2)
        return fields


def percentile(ordered: list[float], p: float) -> float:
    """The nearest-rank percentile of sorted samples."""
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


class FunctionSystem:
    """`sluice server` with one trivial function; see the module docstring."""

    name = "sluice"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server: SluiceServer | None = None
        self.runs = 0
        self.lam: Any = None

    def start(self) -> Endpoint:
        self.runs += 1
        data_dir = self.workdir / f"sluice-functions-{self.runs}"
        data_dir.mkdir(parents=True)
        self.server = SluiceServer(data_dir)
        try:
            self.server.start()
            iam = self.server.client("iam")
            trust = json.dumps(TRUST)
            role = iam.create_role(RoleName="bench-role", AssumeRolePolicyDocument=trust)["Role"]
            self.lam = self.server.client("lambda")
            self.lam.create_function(FunctionName=FUNCTION, Runtime="python3.11", Role=role["Arn"],
                                     Handler="app.handler", Code={"ZipFile": _zip()})  # fmt: skip
            self.lam.get_waiter("function_active_v2").wait(FunctionName=FUNCTION)
        except BaseException:
            self.stop()
            raise
        assert self.server.proc is not None
        return Endpoint("127.0.0.1", self.server.port, self.server.proc.pid)

    def cold_starts(self, count: int) -> Latencies:
        """`count` timed calls, each in a new environment (after one untimed call: the
        server's first environment also looks at what the host allows, once)."""
        self.warm_up()
        result = Latencies()
        for i in range(count):
            self._change(str(i))
            self._timed(result, i)
        return result

    def warm_up(self) -> None:
        """One untimed call: an environment is started for the warm calls to reuse."""
        self._timed(Latencies(), -1)

    def warm_invokes(self, count: int) -> Latencies:
        result = Latencies()
        for i in range(count):
            self._timed(result, i)
        return result

    def _timed(self, result: Latencies, i: int) -> None:
        event = json.dumps({"i": i}).encode()
        started = time.perf_counter()
        answer = self.lam.invoke(FunctionName=FUNCTION, Payload=event, LogType="Tail")
        payload = answer["Payload"].read()
        result.calls_ms.append((time.perf_counter() - started) * 1000)
        if answer.get("FunctionError") or payload != event:
            result.failed.append(payload.decode("utf-8", "replace")[:200])
        match = _INIT.search(base64.b64decode(answer.get("LogResult", "")).decode())
        if match:
            result.init_ms.append(float(match.group(1)))

    def _change(self, value: str) -> None:
        """A new revision of the function: its warm environment is never used again."""
        variables = {"Variables": {"ROUND": value}}
        self.lam.update_function_configuration(FunctionName=FUNCTION, Environment=variables)
        deadline = time.monotonic() + _UPDATE_TIMEOUT
        while time.monotonic() < deadline:
            config = self.lam.get_function_configuration(FunctionName=FUNCTION)
            if config["LastUpdateStatus"] == "Successful":
                return
            time.sleep(0.01)
        raise TimeoutError(f"the update of {FUNCTION} did not finish")

    def sandbox(self) -> str | None:
        """What the server's environments got on this machine, as its log says it."""
        if self.server is None or not self.server.log_path.exists():
            return None
        found = _SANDBOX.findall(self.server.log_path.read_text(errors="replace"))
        return re.sub(r" \([^)]*\)", "", found[-1]) if found else None  # no paths

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def log_tail(self, lines: int = 20) -> str:
        return "" if self.server is None else self.server.log_tail(lines)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("app.py")
        info.external_attr = 0o644 << 16  # readable by all, as Lambda wants a package
        archive.writestr(info, HANDLER)
    return buffer.getvalue()

"""The runner's rules and the package store, with real execution environments.

Every environment here is a real `bootstrap.py` process of this Python; credentials come from
a stand-in source (no control plane), since the runner only needs the `CredentialSource`
protocol. Each test runs its own loop with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
import time
from pathlib import Path

import pytest

from lambda_kit import make_zip
from sluice.functions.package import PackageError, PackageStore
from sluice.functions.runner import Runner
from sluice.functions.spec import FunctionSpec, RunnerSettings, TemporaryCredentials, Throttled

CODE = """
import os, time
def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("big"):
        print("x" * event["big"], end="")
    return {"pid": os.getpid(), "key": os.environ["AWS_ACCESS_KEY_ID"], "v": os.environ["V"]}
"""


class Keys:
    """Credentials that expire `lifetime` seconds after they are made."""

    def __init__(self, lifetime: float = 3600.0) -> None:
        self.lifetime = lifetime
        self.made = 0

    def credentials(self, role_arn: str, session_name: str) -> TemporaryCredentials:
        self.made += 1
        return TemporaryCredentials(f"ASIAKEY{self.made}", "secret", "token",
                                    time.time() + self.lifetime)  # fmt: skip


def spec(root: Path, revision: str = "r1", **changes: object) -> FunctionSpec:
    store = PackageStore(root)
    package = store.add(make_zip({"app.py": CODE}))
    values: dict[str, object] = dict(
        name="fn", arn="arn:aws:lambda:us-east-1:123456789012:function:fn", handler="app.handler",
        runtime="python3.11", role_arn="arn:aws:iam::123456789012:role/r", timeout=5.0,
        memory_mb=256, revision=revision, task_root=store.unpacked(package.hex_digest),
        variables={"V": revision},
    )  # fmt: skip
    values.update(changes)
    return FunctionSpec(**values)  # type: ignore[arg-type]


def runner(root: Path, keys: Keys | None = None, **settings: object) -> Runner:
    values: dict[str, object] = dict(
        root=root, region="us-east-1", endpoint_url="http://127.0.0.1:1", python=sys.executable
    )
    values.update(settings)  # fmt: skip
    return Runner(RunnerSettings(**values), keys or Keys())  # type: ignore[arg-type]


async def call(run: Runner, fn: FunctionSpec, event: dict[str, object] | None = None) -> dict:
    outcome = await run.invoke(fn, "rid-" + str(time.monotonic()), json.dumps(event or {}).encode())
    assert outcome.error is None, outcome.payload
    result: dict = json.loads(outcome.payload)
    return result


def test_warm_reuse_and_a_second_environment_when_busy(tmp_path: Path) -> None:
    async def scenario() -> None:
        run = runner(tmp_path)
        fn = spec(tmp_path)
        first = await call(run, fn)
        assert (await call(run, fn))["pid"] == first["pid"]  # warm
        slow = asyncio.create_task(call(run, fn, {"sleep": 0.5}))
        await asyncio.sleep(0.2)
        other = await call(run, fn)  # the warm one is busy: a new one
        assert other["pid"] != first["pid"]
        assert (await slow)["pid"] == first["pid"]
        assert run.running == 2
        await run.stop()
        assert run.running == 0

    asyncio.run(scenario())


def test_reserved_concurrency_throttles(tmp_path: Path) -> None:
    async def scenario() -> None:
        run = runner(tmp_path)
        with pytest.raises(Throttled):
            await call(run, spec(tmp_path, reserved_concurrency=0))
        fn = spec(tmp_path, reserved_concurrency=1)
        slow = asyncio.create_task(call(run, fn, {"sleep": 0.5}))
        await asyncio.sleep(0.2)
        with pytest.raises(Throttled):
            await call(run, fn)
        await slow
        await call(run, fn)  # free again
        await run.stop()

    asyncio.run(scenario())


def test_the_account_limit_evicts_idle_environments_of_other_functions(tmp_path: Path) -> None:
    async def scenario() -> None:
        run = runner(tmp_path, max_environments=1)
        await call(run, spec(tmp_path))
        other = spec(tmp_path, name="other")
        await call(run, other)  # the idle one of "fn" made room
        assert run.running == 1
        slow = asyncio.create_task(call(run, other, {"sleep": 0.5}))
        await asyncio.sleep(0.2)
        with pytest.raises(Throttled):
            await call(run, spec(tmp_path))
        await slow
        await run.stop()

    asyncio.run(scenario())


def test_a_new_revision_never_reuses_old_environments(tmp_path: Path) -> None:
    async def scenario() -> None:
        run = runner(tmp_path)
        old = await call(run, spec(tmp_path, "r1"))
        new = await call(run, spec(tmp_path, "r2"))
        assert new["pid"] != old["pid"] and new["v"] == "r2"
        run.retire("fn")
        assert (await call(run, spec(tmp_path, "r2")))["pid"] != new["pid"]
        await run.stop()

    asyncio.run(scenario())


def test_idle_environments_are_reaped(tmp_path: Path) -> None:
    async def scenario() -> None:
        run = runner(tmp_path, idle_seconds=0.1)
        await call(run, spec(tmp_path))
        await asyncio.sleep(0.2)
        run.reap()
        assert run.running == 0
        await run.stop()

    asyncio.run(scenario())


def test_credentials_close_to_expiry_are_renewed(tmp_path: Path) -> None:
    async def scenario(margin: float) -> tuple[str, str]:
        run = runner(tmp_path, Keys(lifetime=400.0), credential_margin=margin)
        fn = spec(tmp_path)
        first = await call(run, fn)
        second = await call(run, fn)
        await run.stop()
        assert second["pid"] == first["pid"]
        return first["key"], second["key"]

    assert asyncio.run(scenario(300.0)) == ("ASIAKEY1", "ASIAKEY1")  # 400 s left: kept
    first, second = asyncio.run(scenario(500.0))  # always within the margin: renewed
    assert first != second


def test_the_log_has_start_end_and_report(tmp_path: Path) -> None:
    async def scenario() -> None:
        run = runner(tmp_path)
        outcome = await run.invoke(spec(tmp_path), "rid-1", b"{}")
        await run.stop()
        lines = outcome.log.splitlines()
        assert lines[0] == "START RequestId: rid-1 Version: $LATEST"
        assert lines[-2] == "END RequestId: rid-1"
        assert lines[-1].startswith("REPORT RequestId: rid-1\tDuration: ")
        assert "Init Duration: " in lines[-1]
        stream = run.logs.events("/aws/lambda/fn", outcome.stream)
        assert "".join(event.message for event in stream) == outcome.log

    asyncio.run(scenario())


def test_the_memory_of_the_starting_process_is_not_the_functions(tmp_path: Path) -> None:
    # Linux carries ru_maxrss across exec: a big parent must not make a small function "OOM".
    ballast = b"x" * (200 * 1024 * 1024)

    async def scenario() -> None:
        run = runner(tmp_path)
        outcome = await run.invoke(spec(tmp_path, memory_mb=128), "rid-1", b"{}")
        await run.stop()
        assert outcome.error is None, outcome.payload
        used = int(outcome.log.split("Max Memory Used: ")[1].split()[0])
        assert 0 < used < 128

    asyncio.run(scenario())
    assert len(ballast) > 0


def test_long_and_unfinished_lines_reach_the_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        run = runner(tmp_path)
        started = time.monotonic()
        outcome = await run.invoke(spec(tmp_path), "rid-1", b'{"big": 300000}')
        assert time.monotonic() - started < 1.5  # the end of the output was seen at once
        await run.stop()
        lines = outcome.log.splitlines()
        assert lines[1:3] == ["x" * 262144, "x" * (300000 - 262144)]
        assert lines[3] == "END RequestId: rid-1"

    asyncio.run(scenario())


def test_packages_are_kept_by_content_and_checked(tmp_path: Path) -> None:
    store = PackageStore(tmp_path)
    data = make_zip({"a.py": "A = 1\n", "pkg/b.py": ""})
    package = store.add(data)
    assert package.sha256 == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert package.size == len(data)
    assert store.add(data) == package
    root = store.unpacked(package.hex_digest)
    assert (root / "a.py").read_text() == "A = 1\n" and (root / "pkg" / "b.py").exists()
    for bad in (b"not a zip", b"", make_zip({"../escape.py": ""}), make_zip({"/abs.py": ""})):
        with pytest.raises(PackageError):
            store.add(bad)
    assert not (tmp_path.parent / "escape.py").exists()


IMPORTS = """
import importlib.util, os, sys
def handler(event, context):
    import boto3
    boto3.session.Session().client("rds", region_name="us-east-1").generate_db_auth_token(
        "127.0.0.1", 3306, "admin")
    found = {n: importlib.util.find_spec(n) is not None for n in event["names"]}
    return {"found": found, "site": "site" in sys.modules, "path": sys.path,
            "stdlib": os.path.dirname(os.__file__)}
"""


def test_only_lambdas_own_libraries_are_importable(tmp_path: Path) -> None:
    # The server's Python has PyMySQL, cryptography and Sluice; Lambda's runtime has boto3
    # and what it needs, nothing more (PyMySQL with cryptography doubles an environment's size).
    names = ["boto3", "botocore", "dateutil", "six", "pymysql", "cryptography", "sluice",
             "psycopg"]  # fmt: skip

    async def scenario() -> dict[str, object]:
        run = runner(tmp_path)
        store = PackageStore(tmp_path)
        package = store.add(make_zip({"app.py": IMPORTS}))
        fn = spec(tmp_path, task_root=store.unpacked(package.hex_digest))
        outcome = await run.invoke(fn, "rid-1", json.dumps({"names": names}).encode())
        await run.stop()
        assert outcome.error is None, outcome.payload
        result: dict[str, object] = json.loads(outcome.payload)
        return result

    result = asyncio.run(scenario())
    assert result["found"] == {"boto3": True, "botocore": True, "dateutil": True, "six": True,
                               "pymysql": False, "cryptography": False, "sluice": False,
                               "psycopg": False}  # fmt: skip
    assert result["site"] is False
    path = result["path"]
    assert isinstance(path, list)
    assert path[0].startswith(str(tmp_path / "unpacked"))  # the task root first
    assert path.index(str(tmp_path / "libraries")) < path.index(result["stdlib"])


WARNS = """
import warnings
def deprecated():
    warnings.warn("old", DeprecationWarning, stacklevel=3)  # names the handler's caller
def handler(event, context):
    deprecated()
    warnings.warn("mine", UserWarning)
    return 1
"""


def test_library_warnings_about_the_runtime_are_not_shown(tmp_path: Path) -> None:
    # Lambda's runtime calls the handler from a module that is not __main__: a library's
    # DeprecationWarning naming that caller stays hidden there; the function's own show.
    async def scenario() -> str:
        run = runner(tmp_path)
        store = PackageStore(tmp_path)
        package = store.add(make_zip({"app.py": WARNS}))
        fn = spec(tmp_path, task_root=store.unpacked(package.hex_digest))
        outcome = await run.invoke(fn, "rid-1", b"{}")
        await run.stop()
        assert outcome.error is None, outcome.payload
        return outcome.log

    log = asyncio.run(scenario())
    assert "UserWarning: mine" in log
    assert "DeprecationWarning" not in log

"""The sandbox of an execution environment: merged layers, the launcher's steps, cgroup discovery.

The launcher (`isolate.py`) is run for real, as the environments run it; the steps that need
privileges the machine does not give this test run are skipped, saying which.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.functions.cgroups import _locate
from sluice.functions.runner import Runner
from sluice.functions.sandbox import ISOLATE, UNPRIVILEGED_USER, Sandbox, merge_layers
from sluice.functions.spec import FunctionSpec, RunnerSettings, TemporaryCredentials

V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_MOUNTS = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_later_layers_are_laid_over_earlier_ones(tmp_path: Path) -> None:
    one = write(tmp_path / "one", {"python/a.py": "1", "python/b.py": "1", "bin/x/y": "dir"})
    two = write(tmp_path / "two", {"python/b.py": "2", "python/c/d.py": "2", "bin/x": "file"})
    merged = tmp_path / "merged"
    merge_layers((one, two), merged)
    texts = {str(p.relative_to(merged)): p.read_text() for p in merged.rglob("*") if p.is_file()}
    assert texts == {"python/a.py": "1", "python/b.py": "2", "python/c/d.py": "2", "bin/x": "file"}
    assert (one / "python/b.py").read_text() == "1"  # the layers themselves are unchanged
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".part-")]


def test_no_layers_is_an_empty_opt(tmp_path: Path) -> None:
    merge_layers((), tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize(("mounts", "membership", "expected"), [
    (V1_MOUNTS, "4:memory:/process_api/abc\n0::/\n",
     (Path("/sys/fs/cgroup/memory/process_api/abc"), 1)),
    (V1_MOUNTS, "4:memory:/\n", (Path("/sys/fs/cgroup/memory"), 1)),
    (V2_MOUNTS, "1:name=systemd:/x\n", None),  # no memory controller anywhere
])  # fmt: skip
def test_the_memory_hierarchy_of_this_process_is_found(
    mounts: str, membership: str, expected: tuple[Path, int] | None
) -> None:
    assert _locate(mounts, membership) == expected


def isolated(plan: dict[str, object], code: str) -> subprocess.CompletedProcess[str]:
    python = sys.executable
    argv = [python, "-I", "-S", str(ISOLATE), json.dumps(plan), python, "-I", "-S", "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/")


@pytest.mark.parametrize("kind", ["user", "mount"])
def test_a_namespace_shows_the_layers_as_opt_and_leaves_the_machines_alone(
    tmp_path: Path, kind: str
) -> None:
    if kind == "mount" and os.geteuid() != 0:
        pytest.skip("a mount namespace of its own needs root")
    write(tmp_path, {"python/ca.pem": "ca"})
    before = sorted(os.listdir("/opt"))
    read = "import os; print(open('/opt/python/ca.pem').read(), sorted(os.listdir('/opt')))"
    done = isolated({"namespace": kind, "opt": str(tmp_path)}, read)
    if done.returncode == 70 and "unshare" in done.stderr:
        pytest.skip(f"the kernel refuses: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ca", "['python']"]
    assert sorted(os.listdir("/opt")) == before
    write_it = "open('/opt/python/new', 'w')"
    refused = isolated({"namespace": kind, "opt": str(tmp_path)}, write_it)
    assert "Read-only file system" in refused.stderr
    assert not (tmp_path / "python/new").exists()


def test_a_failed_step_is_said_and_nothing_runs() -> None:
    done = isolated({"cgroup": "/proc/nonexistent/cgroup.procs"}, "print('ran')")
    assert done.returncode == 70
    assert done.stderr.startswith("execution environment not started: cannot write")
    assert "ran" not in done.stdout


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A state directory another user can reach (pytest's own temporary one is private)."""
    root = Path(tempfile.mkdtemp(prefix="sluice-sandbox-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_a_root_server_runs_handlers_as_an_unprivileged_user(open_root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only a root server changes the environments' user")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no interpreter outside a private directory")
    code = open_root / "unpacked" / "fn"
    write(code, {"app.py": (
        "import os\ndef handler(event, context):\n"
        "    try:\n        open('mine', 'w')\n        wrote = True\n"
        "    except OSError:\n        wrote = False\n"
        "    return {'uid': os.getuid(), 'wrote': wrote}\n")})  # fmt: skip
    for path in (code.parent, code, code / "app.py"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    settings = RunnerSettings(root=open_root, region="us-east-1",
                              endpoint_url="http://127.0.0.1:1", python=python)  # fmt: skip
    keys = TemporaryCredentials("ASIAKEY", "secret", "token", time.time() + 3600)
    fn = FunctionSpec(name="fn", arn="arn:aws:lambda:us-east-1:123456789012:function:fn",
                      handler="app.handler", runtime="python3.11", role_arn="r", timeout=5.0,
                      memory_mb=128, revision="r1", task_root=code)  # fmt: skip

    class Keys:
        def credentials(self, role_arn: str, session_name: str) -> TemporaryCredentials:
            return keys

    async def scenario() -> dict[str, object]:
        run = Runner(settings, Keys())
        try:
            outcome = await run.invoke(fn, "rid", b"{}")
        finally:
            await run.stop()
        assert outcome.error is None, outcome.log
        result: dict[str, object] = json.loads(outcome.payload)
        return result

    result = asyncio.run(scenario())
    assert result == {"uid": pwd.getpwnam(UNPRIVILEGED_USER).pw_uid, "wrote": False}


def test_without_a_cgroup_the_watchdog_ends_an_environment_beyond_memory_size(
    tmp_path: Path,
) -> None:
    code = tmp_path / "code"
    write(code, {"app.py": (
        "import time\ndef handler(event, context):\n"
        "    hog = b'x' * (event['mb'] * 1024 * 1024)\n    time.sleep(0.5)\n"
        "    return len(hog)\n")})  # fmt: skip
    settings = RunnerSettings(root=tmp_path, region="us-east-1",
                              endpoint_url="http://127.0.0.1:1", python=sys.executable)  # fmt: skip
    keys = TemporaryCredentials("ASIAKEY", "secret", "token", time.time() + 3600)
    fn = FunctionSpec(name="fn", arn="arn:aws:lambda:us-east-1:123456789012:function:fn",
                      handler="app.handler", runtime="python3.11", role_arn="r", timeout=5.0,
                      memory_mb=128, revision="r1", task_root=code)  # fmt: skip

    class Keys:
        def credentials(self, role_arn: str, session_name: str) -> TemporaryCredentials:
            return keys

    async def scenario() -> tuple[bytes, str, bytes]:
        run = Runner(settings, Keys(), Sandbox(tmp_path / "opt"))  # a host that allows nothing
        try:
            over = await run.invoke(fn, "rid-1", b'{"mb": 200}')
            after = await run.invoke(fn, "rid-2", b'{"mb": 1}')
        finally:
            await run.stop()
        return over.payload, over.log, after.payload

    over, log, after = asyncio.run(scenario())
    assert json.loads(over) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": "RequestId: rid-1 Error: Runtime exited with error: signal: killed",
    }
    assert "Max Memory Used: 128 MB" in log and "Error Type: Runtime.OutOfMemory" in log
    assert json.loads(after) == 1024 * 1024  # a new environment

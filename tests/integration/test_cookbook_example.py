"""examples/cookbook-403, run as a reader runs it: prerequisites.sh, recipe.sh and cleanup.sh
with the aws CLI against a throwaway `sluice server`, for MySQL and for PostgreSQL.

The recipe's check must answer with the table's rows, fetched by the function through the
proxy; after cleanup.sh nothing the scripts made may be left: no API object, no DB instance
data, no listener on the server's addresses, no process of the instances or the function.

The aws CLI's waiters poll every second here (AWS_DATA_PATH): RDS's own pace, a DB instance
looked at every 30 s and a function every 5 s, would have the scripts mostly sleep.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import botocore.loaders
import pytest

from sluice.devtools.controlplane import SluiceServer

pytestmark = pytest.mark.timeout(600)

EXAMPLE = Path(__file__).parents[2] / "examples" / "cookbook-403"
BOOKS = [
    {"id": 1, "name": "AWS Cookbook"},
    {"id": 2, "name": "Serverless Patterns"},
    {"id": 3, "name": "Connection Pooling"},
]


@pytest.fixture
def server() -> Iterator[SluiceServer]:
    with SluiceServer() as srv:
        yield srv
        print(f"---- sluice server log ----\n{srv.log_tail(120)}")


@pytest.fixture(scope="module")
def quick_waiters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A botocore data directory with the RDS and Lambda waiters polling every second.

    The same acceptors and the same patience (attempts times delay) as botocore's own;
    AWS_DATA_PATH makes the aws CLI find them before those.
    """
    root = tmp_path_factory.mktemp("botocore-data")
    loader = botocore.loaders.Loader()
    for service in ("rds", "lambda"):
        version = loader.determine_latest_version(service, "waiters-2")
        model = loader.load_service_model(service, "waiters-2", version)
        for waiter in model["waiters"].values():
            waiter["maxAttempts"] *= waiter["delay"]
            waiter["delay"] = 1
        target = root / service / version / "waiters-2.json"
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(model))
    return root


def _script(server: SluiceServer, name: str, engine: str, work: Path, waiters: Path) -> str:
    env = {
        **server.env(), "ENDPOINT_URL": server.endpoint, "SLUICE_DATA_DIR": str(server.data_dir),
        "ENGINE": engine, "WORK_DIR": str(work), "PYTHON": sys.executable,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "AWS_DATA_PATH": str(waiters),
    }  # fmt: skip
    proc = subprocess.run(["bash", str(EXAMPLE / name)], env=env, capture_output=True,
                          text=True, timeout=400)  # fmt: skip
    assert proc.returncode == 0, f"{name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _listeners(cidr: str) -> list[str]:
    """Listening TCP sockets on an address of `cidr` (from /proc/net/tcp)."""
    network, found = ipaddress.ip_network(cidr), []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        ip = ipaddress.IPv4Address(bytes.fromhex(address)[::-1])
        if state == "0A" and ip in network:
            found.append(f"{ip}:{int(port, 16)}")
    return found


def _processes_left(directory: Path, server: int) -> list[str]:
    """Command lines of the server's children and of other processes that name `directory`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == server:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if str(directory) in cmdline or parent == server:
            found.append(cmdline)
    return found


@pytest.mark.parametrize("engine", ["mysql", "postgres"])
def test_prerequisites_recipe_and_cleanup(
    server: SluiceServer, engine: str, tmp_path: Path, quick_waiters: Path
) -> None:
    work = tmp_path / "work"
    _script(server, "prerequisites.sh", engine, work, quick_waiters)
    assert _listeners(server.vpc_cidr), "the DB instance listens on its own address"
    out = _script(server, "recipe.sh", engine, work, quick_waiters)
    answer = json.loads((work / "response.json").read_text())
    endpoint = next(line.split("=", 1)[1] for line in out.splitlines()
                    if line.startswith("RDS_PROXY_ENDPOINT="))  # fmt: skip
    assert answer["host"] == endpoint  # step 9: the function connected to the proxy
    assert answer["user"].split("@")[0] == "admin"
    assert answer["books"] == BOOKS
    _script(server, "cleanup.sh", engine, work, quick_waiters)

    assert not work.exists()
    assert _listeners(server.vpc_cidr) == []
    assert _processes_left(server.data_dir, server.pid) == []
    assert list((server.data_dir / "db-instances").iterdir()) == []
    aws = server.aws
    assert aws("rds", "describe-db-instances")["DBInstances"] == []
    assert aws("rds", "describe-db-subnet-groups")["DBSubnetGroups"] == []
    assert aws("rds", "describe-db-proxies")["DBProxies"] == []
    assert aws("lambda", "list-functions")["Functions"] == []
    assert aws("secretsmanager", "list-secrets")["SecretList"] == []
    assert aws("iam", "list-roles")["Roles"] == []
    assert aws("iam", "list-policies", "--scope", "Local")["Policies"] == []
    assert aws("ec2", "describe-network-interfaces")["NetworkInterfaces"] == []
    groups = aws("ec2", "describe-security-groups")["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == ["default"]


def test_a_server_removes_the_data_directory_it_made(tmp_path: Path) -> None:
    made = SluiceServer()
    with made:
        made.restart()  # a restart keeps it
        assert (made.data_dir / "state.db").exists()
    assert not made.data_dir.exists()
    given = SluiceServer(tmp_path / "given")
    with given:
        pass
    assert (given.data_dir / "state.db").exists()

"""What a function's execution environment sees of the machine: /opt, its memory limit.

Functions made with boto3 on a real `sluice server`; their layers must appear as /opt exactly
as Lambda lays them out (later layers over earlier ones), each environment with its own /opt
while the machine's /opt stays as it was; and MemorySize must hold for everything the
environment runs. What the server could provide on this machine is what its log says it found
(a non-root server without user namespaces has no /opt, a host without a writable memory
cgroup only the watchdog); a test of an ability the machine lacks is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from lambda_kit import TRUST_LAMBDA, make_zip
from sluice.devtools.controlplane import SluiceServer

READER = """
import json, os, time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    import shared, certs
    seen = {}
    for path in ("/opt/python/ca.pem", "/opt/python/shared.py"):
        if os.path.exists(path):
            with open(path) as f:
                seen[path] = f.read()
    try:
        open("/opt/python/new.txt", "w").close()
        writable = True
    except OSError:
        writable = False
    return {"shared": shared.WHERE, "ca": certs.ca(), "opt": sorted(os.listdir("/opt")),
            "seen": seen, "writable": writable}
"""

CERTS = """
import os
def ca():
    with open(os.path.join("/opt/python", "ca.pem")) as f:
        return f.read()
"""

HOG = """
import subprocess, sys

def handler(event, context):
    child = "b = b'x' * (%d * 1024 * 1024); import time; time.sleep(0.5)" % event["mb"]
    return subprocess.run([sys.executable, "-c", child]).returncode
"""


def host_opt() -> tuple[list[str], list[str]]:
    """The machine's /opt: its entries, and the mounts on or under it."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted(os.listdir("/opt")), [m for m in mounts if m == "/opt" or m.startswith("/opt/")]


@pytest.fixture(scope="module")
def before() -> tuple[list[str], list[str]]:
    return host_opt()


@pytest.fixture(scope="module")
def server(before: Any) -> Iterator[SluiceServer]:
    with SluiceServer() as srv:
        yield srv
        print(f"---- sluice server log ----\n{srv.log_tail(60)}")


@pytest.fixture(scope="module")
def role(server: SluiceServer) -> str:
    trust = json.dumps(TRUST_LAMBDA)
    made = server.client("iam").create_role(RoleName="sandbox-role", AssumeRolePolicyDocument=trust)
    arn: str = made["Role"]["Arn"]
    return arn


@pytest.fixture(scope="module")
def layers(server: SluiceServer) -> dict[str, str]:
    """Three layers: the CA file and a module, and two that both hold `shared`."""
    lam = server.client("lambda")
    contents = {
        "certs": {"python/ca.pem": "-----BEGIN CERTIFICATE-----\nca\n", "python/certs.py": CERTS},
        "first": {"python/shared.py": "WHERE = 'first'\n", "bin/tool": "first\n"},
        "second": {"python/shared.py": "WHERE = 'second'\n"},
    }
    arns = {}
    for name, files in contents.items():
        published = lam.publish_layer_version(LayerName=name, Content={"ZipFile": make_zip(files)})
        arns[name] = published["LayerVersionArn"]
    return arns


def make_function(server: SluiceServer, role: str, name: str, files: dict[str, str],
                  handler: str, **extra: Any) -> str:  # fmt: skip
    lam = server.client("lambda")
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=role, Handler=handler,
                        Code={"ZipFile": make_zip(files)}, Timeout=10, **extra)  # fmt: skip
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    return name


def invoke(server: SluiceServer, name: str, event: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    answer = server.client("lambda").invoke(FunctionName=name, Payload=json.dumps(event),
                                            LogType="Tail")  # fmt: skip
    return answer, json.loads(answer["Payload"].read())


def found(server: SluiceServer) -> str:
    """The server's line saying what its environments get on this machine."""
    text = server.log_path.read_text()
    lines = re.findall(r"function environments: /opt .*", text)
    assert lines, "no environment has started yet"
    return str(lines[-1])


@pytest.fixture(scope="module")
def readers(server: SluiceServer, role: str, layers: dict[str, str]) -> tuple[str, str]:
    """Two functions with the same layers in opposite orders (after the CA layer)."""
    code = {"reader.py": READER}
    one = make_function(server, role, "first-then-second", code, "reader.handler",
                        Layers=[layers["certs"], layers["first"], layers["second"]])  # fmt: skip
    two = make_function(server, role, "second-then-first", code, "reader.handler",
                        Layers=[layers["certs"], layers["second"], layers["first"]])  # fmt: skip
    invoke(server, one, {})  # the first environment: the server has looked at the machine
    return one, two


def needs_opt(server: SluiceServer) -> None:
    if "/opt not provided" in found(server):
        pytest.skip("this machine gives the server no mount namespace: /opt is not provided")


def test_a_layer_is_at_opt_as_on_lambda(server: SluiceServer, readers: tuple[str, str]) -> None:
    needs_opt(server)
    meta, body = invoke(server, readers[0], {})
    assert "FunctionError" not in meta, body
    assert body["ca"] == "-----BEGIN CERTIFICATE-----\nca\n"  # read by path from /opt/python
    assert body["opt"] == ["bin", "python"]  # the layers, and nothing of the machine's /opt
    assert body["writable"] is False  # read-only, as on Lambda


def test_later_layers_override_earlier_ones(server: SluiceServer,
                                            readers: tuple[str, str]) -> None:  # fmt: skip
    # Also without /opt: the import path points into the same merged layers.
    _, one = invoke(server, readers[0], {})
    _, two = invoke(server, readers[1], {})
    assert (one["shared"], two["shared"]) == ("second", "first")
    if "/opt not provided" not in found(server):
        assert one["seen"]["/opt/python/shared.py"] == "WHERE = 'second'\n"
        assert two["seen"]["/opt/python/shared.py"] == "WHERE = 'first'\n"


def test_two_functions_see_their_own_opt_at_once(server: SluiceServer,
                                                 readers: tuple[str, str]) -> None:  # fmt: skip
    needs_opt(server)
    with ThreadPoolExecutor(4) as pool:  # both read /opt while the other's environment runs
        calls = [pool.submit(invoke, server, name, {"sleep": 1.0}) for name in readers * 2]
        bodies = [call.result()[1] for call in calls]
    seen = [body["seen"]["/opt/python/shared.py"] for body in bodies]
    assert seen == ["WHERE = 'second'\n", "WHERE = 'first'\n"] * 2


def test_the_machines_opt_is_untouched(server: SluiceServer, readers: tuple[str, str],
                                       before: tuple[list[str], list[str]]) -> None:  # fmt: skip
    invoke(server, readers[0], {})
    assert host_opt() == before


def test_memory_size_limits_every_process_of_the_environment(server: SluiceServer,
                                                             role: str) -> None:  # fmt: skip
    name = make_function(server, role, "spawns-a-hog", {"hog.py": HOG}, "hog.handler",
                         MemorySize=128)  # fmt: skip
    _, small = invoke(server, name, {"mb": 8})
    assert small == 0
    if "memory limit by a watchdog" in found(server):
        pytest.skip("no writable memory cgroup here: the watchdog sees only the runtime itself")
    meta, code = invoke(server, name, {"mb": 200})
    assert "FunctionError" not in meta
    assert code == -9  # the kernel's OOM killer ended the child that went over MemorySize

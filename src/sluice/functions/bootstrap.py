"""The runtime loop inside one execution environment (run as a script, standard library only).

Why it is built this way: an execution environment is a real OS process running the machine's
Python, so the handler's imports, globals and crashes are its own, as on Lambda. The process is
started with the function's whole environment already set (LAMBDA_TASK_ROOT as the working
directory, _HANDLER, the execution role's credentials, ...) and one end of a socket pair whose
descriptor number is its only argument. It imports the handler once (the "init" phase), then
serves invocations one at a time: a frame in (the event and the deadline), the handler called
with the event and a context object, a frame out (the result as JSON, or the error as Lambda's
Python runtime words it). Frames are a 4-byte big-endian length and a JSON object.

Every IPv4 TCP socket the process connects to an address of this host (127.0.0.0/8) is first
bound to the environment's source address (SLUICE_SOURCE_ADDRESS): its network interface's for
a function with a VpcConfig, so the security groups of that interface are what a proxy's
`--source-group` rule matches. Sockets the handler binds itself keep their own address. The
library preloaded into the process (`source_address.c`, LD_PRELOAD) does it for every
connect() of the C library, Python's included; where it did not load, the socket module's
connect methods are wrapped before the handler's module is imported, which covers only
clients built on them. The ready frame says which of the two is active.

The process runs without `site` (`python -S`): what it can import is its task root, its
layers, the directory of Lambda's own libraries (SLUICE_LIBRARIES: boto3 and what boto3
needs) and the standard library, in that order, as on Lambda; nothing else installed for
the machine's Python.

Everything the handler prints goes to the inherited stdout/stderr, which the parent reads as the
function's log; after each invocation a marker line tells the parent that all of that
invocation's output has been written. The script is run by path, never imported as part of the
`sluice` package, so a handler cannot reach Sluice's modules through it.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import os
import socket
import struct
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

MARKER = "\x1esluice-invocation-done"
PRELOAD_BINDING = "preloaded library"  # how connections are bound (see the module docstring)
PYTHON_BINDING = "Python socket module"
_HEADER = struct.Struct(">I")
_MAX_FRAME = 64 * 1024 * 1024


class LambdaContext:
    """The context object a Python handler is given, with Lambda's attribute names."""

    def __init__(self, request_id: str, deadline_ms: int) -> None:
        env = os.environ
        self.aws_request_id = request_id
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.invoked_function_arn = env.get("SLUICE_FUNCTION_ARN", "")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def read_frame(sock: socket.socket) -> dict[str, Any] | None:
    head = _read_exact(sock, _HEADER.size)
    if head is None:
        return None
    (length,) = _HEADER.unpack(head)
    if length > _MAX_FRAME:
        return None
    body = _read_exact(sock, length)
    return None if body is None else dict(json.loads(body))


def write_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message).encode("utf-8")
    sock.sendall(_HEADER.pack(len(body)) + body)


def error_document(
    exc: BaseException, error_type: str | None = None, own_frames: int = 0
) -> dict[str, Any]:
    """An exception as Lambda's Python runtime reports it: its stack trace starts where the
    function's code does, without the first `own_frames` (this runtime's)."""
    frames = traceback.extract_tb(exc.__traceback__)[own_frames:]
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": "",
        "stackTrace": traceback.format_list(frames),
    }


def _log_error(doc: dict[str, Any]) -> None:
    trace = "".join(doc.get("stackTrace", []))
    text = f"[ERROR] {doc['errorType']}: {doc['errorMessage']}\nTraceback (most recent call last):"
    print(f"{text}\n{trace}", file=sys.stderr, end="" if trace.endswith("\n") else "\n")


def load_handler(spec: str) -> tuple[Callable[..., Any] | None, dict[str, Any] | None]:
    """(the handler, None), or (None, the init error as Lambda words it)."""
    module_name, _, function_name = spec.rpartition(".")
    if not module_name:
        message = f"Bad handler '{spec}': not enough values to unpack (expected 2, got 1)"
        return None, {"errorMessage": message, "errorType": "Runtime.MalformedHandlerName",
                      "requestId": "", "stackTrace": []}  # fmt: skip
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        message = f"Unable to import module '{module_name}': {exc}"
        return None, {"errorMessage": message, "errorType": "Runtime.ImportModuleError",
                      "requestId": "", "stackTrace": []}  # fmt: skip
    except Exception as exc:  # the module's own code raised while being imported
        return None, error_document(exc, "Runtime.UserCodeSyntaxError"
                                    if isinstance(exc, SyntaxError) else None)  # fmt: skip
    handler = getattr(module, function_name, None)
    if not callable(handler):
        message = f"Handler '{function_name}' missing on module '{module_name}'"
        return None, {"errorMessage": message, "errorType": "Runtime.HandlerNotFound",
                      "requestId": "", "stackTrace": []}  # fmt: skip
    return handler, None


def invoke(handler: Callable[..., Any], message: dict[str, Any]) -> dict[str, Any]:
    """One invocation: the handler's result as JSON text, or its error document."""
    os.environ.update(message.get("env", {}))  # refreshed credentials
    os.environ["_X_AMZN_TRACE_ID"] = message.get("trace_id", "")
    context = LambdaContext(message["id"], int(message["deadline_ms"]))
    try:
        event = json.loads(message["event"])
        result = handler(event, context)
    except Exception as exc:
        doc = error_document(exc, own_frames=1)  # this function's frame
        _log_error(doc)
        return {"ok": False, "error": doc}
    try:
        return {"ok": True, "payload": json.dumps(result)}
    except (TypeError, ValueError) as exc:
        doc = {
            "errorMessage": f"Unable to marshal response: {exc}",
            "errorType": "Runtime.MarshalError",
            "requestId": message["id"],
            "stackTrace": [],
        }
        _log_error(doc)  # fmt: skip
        return {"ok": False, "error": doc}


def _done(answer: dict[str, Any]) -> dict[str, Any]:
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(1, (MARKER + "\n").encode())
    answer["max_rss_kb"] = peak_resident_kb()
    return answer


def peak_resident_kb() -> int:
    """This process's peak resident memory since its exec (VmHWM).

    Not getrusage's ru_maxrss: Linux carries that across exec, so it would count the memory
    of the process that started this one.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def bind_connections(source: str) -> str:
    """Make IPv4 TCP connections to this host leave from `source` (see the module docstring);
    how: PRELOAD_BINDING, PYTHON_BINDING, or "" (no source address: nothing is bound)."""
    if not source:
        return ""
    if library_loaded(os.environ.get("LD_PRELOAD", "")):
        return PRELOAD_BINDING  # it binds Python's connections too: nothing to wrap
    wrap_socket_module(source)
    return PYTHON_BINDING


def library_loaded(preload: str) -> bool:
    """Whether the first library of LD_PRELOAD is mapped into this process (ld.so skips, with
    a message on stderr, one that it cannot load)."""
    first = preload.replace(" ", ":").split(":")[0]
    if not first:
        return False
    path = os.path.realpath(first)
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any(line.rstrip("\n").endswith(f" {path}") for line in maps)
    except OSError:
        return False


def wrap_socket_module(source: str) -> None:
    """The fallback: `socket.socket.connect` and `connect_ex` wrapped, which every client built
    on the standard library goes through (ssl, socket.create_connection, asyncio, urllib3,
    PyMySQL, ...). A socket already bound (by the handler, say pymysql's bind_address) and
    connections to other hosts are left as they are.
    """
    plain_connect = socket.socket.connect
    plain_connect_ex = socket.socket.connect_ex

    def connect(sock: socket.socket, address: Any) -> None:
        _bind_source(sock, address, source)
        plain_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        _bind_source(sock, address, source)
        return plain_connect_ex(sock, address)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]


def _bind_source(sock: socket.socket, address: Any, source: str) -> None:
    if sock.family != socket.AF_INET or sock.type != socket.SOCK_STREAM:
        return
    if not isinstance(address, tuple) or not address or not _is_this_host(str(address[0])):
        return
    if sock.getsockname()[1] == 0:  # not bound yet; a failure is the connect's (fail closed)
        sock.bind((source, 0))


def _is_this_host(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.IPv4Address(socket.gethostbyname(host)).is_loopback
        except (OSError, ValueError):
            return False


def main(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    binding = bind_connections(os.environ.get("SLUICE_SOURCE_ADDRESS", ""))
    task_root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    layers = [p for p in os.environ.get("SLUICE_LAYER_PATHS", "").split(os.pathsep) if p]
    libraries = os.environ.get("SLUICE_LIBRARIES", "")
    # never this script's own directory; the standard library stays after these
    sys.path[:1] = [task_root, *layers, *([libraries] if libraries else [])]
    # This script is __main__, where Python shows DeprecationWarnings by default; a library's
    # warning that names its caller would name this runtime's frame, which Lambda's is not.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="__main__")
    started = time.monotonic()
    handler, init_error = load_handler(os.environ.get("_HANDLER", ""))
    if init_error is not None:
        _log_error(init_error)
    init_ms = (time.monotonic() - started) * 1000
    write_frame(sock, _done({"ready": True, "init_ms": init_ms, "binding": binding}))
    while True:
        message = read_frame(sock)
        if message is None:
            return 0  # the parent closed the environment
        if handler is None:
            answer: dict[str, Any] = {"ok": False, "error": init_error, "init_failed": True}
        else:
            answer = invoke(handler, message)
        write_frame(sock, _done(answer))


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))

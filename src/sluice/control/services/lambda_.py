"""The Lambda API (rest-json): functions, their code and configuration, and Invoke.

The service owns the function documents (typed as `FunctionRecord`) and the packages; running
code is the `sluice.functions` runner's job, handed a frozen `FunctionSpec` per invocation.
Changes go through states as on AWS, so the CLI's waiters work: a new function is `Pending`
until its package is unpacked, then `Active`; an update is `LastUpdateStatus: InProgress`
until applied, then `Successful`, and a second update meanwhile is refused
(`ResourceConflictException`). A change also retires the function's warm environments.

What is checked before a function is kept (its role: `iam:PassRole` and the trust policy;
its runtime, variables and network) is in `lambda_checks`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import uuid
from collections.abc import Coroutine
from typing import Any

from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError
from sluice.control.principals import Principals
from sluice.control.services import lambda_network
from sluice.control.services.lambda_checks import (
    check_json,
    check_limits,
    check_role,
    check_runtime,
    check_variables,
    check_vpc,
    conflict,
    invalid,
    not_found,
)
from sluice.control.services.lambda_layers import LayerService
from sluice.control.services.lambda_records import (
    ACTIVE,
    FAILED,
    FUNCTION,
    IN_PROGRESS,
    PENDING,
    SUCCESSFUL,
    FunctionRecord,
    Vpc,
    function_out,
)
from sluice.functions.environment import log_tail
from sluice.functions.package import (
    MAX_UNZIPPED,
    MAX_ZIPPED,
    Package,
    PackageError,
    PackageStore,
)
from sluice.functions.runner import Runner
from sluice.functions.spec import (
    CredentialsUnavailable,
    FunctionSpec,
    Outcome,
    Throttled,
)

log = logging.getLogger("sluice.control")

SETTLE_DELAY = 0.2  # how long a change stays Pending / InProgress at least
MAX_PAYLOAD = 6 * 1024 * 1024
MAX_EVENT_PAYLOAD = 256 * 1024
_NAME = re.compile(
    r"(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:(\d{12}):function:|(\d{12}):function:)?"
    r"([a-zA-Z0-9_-]{1,64})(?::(\$LATEST|[a-zA-Z0-9_-]+))?"
)
# Operations whose IAM action has another name.
_ACTIONS = {"Invoke": "InvokeFunction", "GetLayerVersionByArn": "GetLayerVersion"}


class Lambda(LayerService):
    """Lambda operations; method names are the API's operation names."""

    name = "lambda"

    def __init__(self, plane: Plane, runner: Runner, packages: PackageStore) -> None:
        super().__init__(plane, packages)
        self.runner = runner
        self._principals = Principals(plane.store, plane.vault)
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- authorization ----

    def authorization(self, operation: str, params: Params) -> tuple[str, str]:
        """The IAM action and resource ARN a call is authorized for, as Lambda names them."""
        action = f"lambda:{_ACTIONS.get(operation, operation)}"
        if "FunctionName" in params:
            match = _NAME.fullmatch(params["FunctionName"])
            name = match.group(3) if match else params["FunctionName"]
            return action, self.function_arn(name)
        if "Resource" in params:
            return action, str(params["Resource"])
        if "Arn" in params:
            return action, str(params["Arn"])
        if "LayerName" in params:
            layer = params["LayerName"].split(":layer:")[-1]
            arn = f"arn:aws:lambda:{self.plane.region}:{self.plane.account}:layer:{layer}"
            version = params.get("VersionNumber")
            return action, arn if version is None else f"{arn}:{version}"
        return action, "*"

    # ---- functions ----

    def CreateFunction(self, call: Call, params: Params) -> Output:
        name = params["FunctionName"]
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
            raise invalid(f"Invalid function name: {name[:140]}")
        if self.store.get(FUNCTION, name) is not None:
            raise conflict(f"Function already exist: {name}")
        runtime = check_runtime(params.get("Runtime"), params.get("PackageType"))
        check_limits(params)
        if not params.get("Handler"):
            raise invalid("Handler is required for a function with PackageType Zip.")
        check_role(self.plane, self._principals, call.principal, params["Role"])
        vpc = check_vpc(self.store, params.get("VpcConfig"))
        layers = self._layers(params.get("Layers"))
        package = self._package(params["Code"])
        rec = FunctionRecord(
            name=name, arn=self.function_arn(name), runtime=runtime, role=params["Role"],
            handler=params["Handler"], code_sha256=package.sha256, code_size=package.size,
            code_hex=package.hex_digest, last_modified=call.now, revision_id=str(uuid.uuid4()),
            description=params.get("Description", ""), timeout=params.get("Timeout", 3),
            memory_size=params.get("MemorySize", 128),
            variables=check_variables(params.get("Environment")),
            layers=layers, architectures=tuple(params.get("Architectures", ["x86_64"])),
            tags=dict(params.get("Tags", {})),
        )  # fmt: skip
        with self.store.batch():
            rec = rec.but(vpc=lambda_network.attach(self.store, name, vpc))
            self.store.put(FUNCTION, name, rec.to_doc())
        self._network_changed(rec.vpc)
        self._settle_later(name)
        return function_out(rec, self.layer_sizes(rec.layers))

    def GetFunction(self, call: Call, params: Params) -> Output:
        rec = self.function(params["FunctionName"], params.get("Qualifier"))
        out: Output = {
            "Configuration": function_out(rec, self.layer_sizes(rec.layers)),
            "Code": {"RepositoryType": "S3"},
        }
        if rec.tags:
            out["Tags"] = dict(rec.tags)
        if rec.reserved_concurrency is not None:
            out["Concurrency"] = {"ReservedConcurrentExecutions": rec.reserved_concurrency}
        return out

    def GetFunctionConfiguration(self, call: Call, params: Params) -> Output:
        rec = self.function(params["FunctionName"], params.get("Qualifier"))
        return function_out(rec, self.layer_sizes(rec.layers))

    def ListFunctions(self, call: Call, params: Params) -> Output:
        records = sorted(self._records(), key=lambda r: r.name)
        marker = params.get("Marker")
        if marker:
            records = [r for r in records if r.name > marker]
        limit = params.get("MaxItems", 50)
        page = records[:limit]
        out: Output = {"Functions": [function_out(r, self.layer_sizes(r.layers)) for r in page]}
        if len(records) > limit:
            out["NextMarker"] = page[-1].name
        return out

    def UpdateFunctionConfiguration(self, call: Call, params: Params) -> Output:
        rec = self._updatable(params["FunctionName"], params.get("RevisionId"))
        check_limits(params)
        changes: dict[str, Any] = {}
        if "Role" in params:
            check_role(self.plane, self._principals, call.principal, params["Role"])
            changes["role"] = params["Role"]
        if "Runtime" in params:
            changes["runtime"] = check_runtime(params["Runtime"], None)
        simple = {"Handler": "handler", "Description": "description", "Timeout": "timeout",
                  "MemorySize": "memory_size"}  # fmt: skip
        changes.update({field: params[key] for key, field in simple.items() if key in params})
        if "Environment" in params:
            changes["variables"] = check_variables(params["Environment"])
        if "VpcConfig" in params:
            changes["vpc"] = check_vpc(self.store, params["VpcConfig"])
        if "Layers" in params:
            changes["layers"] = self._layers(params["Layers"])
        with self.store.batch():
            wanted = changes.get("vpc", rec.vpc)
            changes["vpc"] = lambda_network.rewire(self.store, rec.name, rec.vpc, wanted)
            out = self._update(rec, call, changes, "The function is being updated.")
        if changes["vpc"] is not rec.vpc:
            self.plane.changed("ec2")
        return out

    def UpdateFunctionCode(self, call: Call, params: Params) -> Output:
        rec = self._updatable(params["FunctionName"], params.get("RevisionId"))
        if params.get("DryRun"):
            return function_out(rec, self.layer_sizes(rec.layers))
        package = self._package(params)
        changes = {"code_sha256": package.sha256, "code_size": package.size,
                   "code_hex": package.hex_digest}  # fmt: skip
        return self._update(rec, call, changes, "The function code is being updated.")

    def DeleteFunction(self, call: Call, params: Params) -> Output:
        rec = self.function(params["FunctionName"], params.get("Qualifier"))
        with self.store.batch():
            lambda_network.detach(self.store, rec.vpc)
            self.store.delete(FUNCTION, rec.name)
        self.runner.retire(rec.name)
        self._network_changed(rec.vpc)
        return {"StatusCode": 204}

    # ---- concurrency and tags ----

    def PutFunctionConcurrency(self, call: Call, params: Params) -> Output:
        rec = self.function(params["FunctionName"], None)
        count = params["ReservedConcurrentExecutions"]
        limit = self.runner.settings.max_environments
        if count > limit:
            raise invalid(f"Specified ReservedConcurrentExecutions for function decreases "
                          f"account's UnreservedConcurrentExecution below its minimum value "
                          f"of [0]; this server runs at most {limit} environments.")  # fmt: skip
        self.store.put(FUNCTION, rec.name, rec.but(reserved_concurrency=count).to_doc())
        return {"ReservedConcurrentExecutions": count}

    def GetAccountSettings(self, call: Call, params: Params) -> Output:
        """The account's limits as this server keeps them (ConcurrentExecutions: how many
        environments may run at once, `sluice server --concurrent-executions`)."""
        records = self._records()
        limit = self.runner.settings.max_environments
        reserved = sum(r.reserved_concurrency or 0 for r in records)
        code = sum(r.code_size for r in records) + self.layers_code_size()
        return {
            "AccountLimit": {
                "TotalCodeSize": 80 * 1024**3, "CodeSizeUnzipped": MAX_UNZIPPED,
                "CodeSizeZipped": MAX_ZIPPED, "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": max(0, limit - reserved),
            },
            "AccountUsage": {"TotalCodeSize": code, "FunctionCount": len(records)},
        }  # fmt: skip

    def GetFunctionConcurrency(self, call: Call, params: Params) -> Output:
        rec = self.function(params["FunctionName"], None)
        if rec.reserved_concurrency is None:
            return {}
        return {"ReservedConcurrentExecutions": rec.reserved_concurrency}

    def DeleteFunctionConcurrency(self, call: Call, params: Params) -> Output:
        rec = self.function(params["FunctionName"], None)
        self.store.put(FUNCTION, rec.name, rec.but(reserved_concurrency=None).to_doc())
        return {}

    def TagResource(self, call: Call, params: Params) -> Output:
        rec = self.function(params["Resource"], None)
        tags = {**rec.tags, **params["Tags"]}
        self.store.put(FUNCTION, rec.name, rec.but(tags=tags).to_doc())
        return {}

    def UntagResource(self, call: Call, params: Params) -> Output:
        rec = self.function(params["Resource"], None)
        tags = {k: v for k, v in rec.tags.items() if k not in set(params["TagKeys"])}
        self.store.put(FUNCTION, rec.name, rec.but(tags=tags).to_doc())
        return {}

    def ListTags(self, call: Call, params: Params) -> Output:
        return {"Tags": dict(self.function(params["Resource"], None).tags)}

    # ---- Invoke ----

    async def Invoke(self, call: Call, params: Params) -> Output:
        rec = self.function(params["FunctionName"], params.get("Qualifier"))
        kind = params.get("InvocationType", "RequestResponse")
        event = params.get("Payload") or b"{}"
        limit = MAX_EVENT_PAYLOAD if kind == "Event" else MAX_PAYLOAD
        if len(event) > limit:
            raise ApiError("RequestTooLargeException", f"Request must be smaller than {limit} "
                           "bytes for the InvokeFunction operation", 413)  # fmt: skip
        check_json(event)
        if rec.state != ACTIVE:
            raise conflict("The operation cannot be performed at this time. The function is "
                           f"currently in the following state: {rec.state}")  # fmt: skip
        if kind == "DryRun":
            return {"StatusCode": 204}
        spec = await asyncio.to_thread(self._spec, rec)
        if kind == "Event":
            self._background(self._run_event(spec, call.request_id, event))
            return {"StatusCode": 202, "Payload": b""}
        outcome = await self._run(spec, call.request_id, event)
        out: Output = {"StatusCode": 200, "Payload": outcome.payload, "ExecutedVersion": "$LATEST"}
        if outcome.error is not None:
            out["FunctionError"] = outcome.error
        if params.get("LogType") == "Tail":
            out["LogResult"] = log_tail(outcome.log)
        return out

    async def _run(self, spec: FunctionSpec, request_id: str, event: bytes) -> Outcome:
        try:
            outcome = await self.runner.invoke(spec, request_id, event)
        except Throttled as exc:
            raise ApiError("TooManyRequestsException", "Rate Exceeded.", 429) from exc
        except CredentialsUnavailable as exc:
            raise invalid(str(exc)) from None
        if len(outcome.payload) > MAX_PAYLOAD:
            message = ("Response payload size exceeded maximum allowed payload size "
                       f"({MAX_PAYLOAD} bytes).")  # fmt: skip
            document = {"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"}
            return dataclasses.replace(outcome, payload=json.dumps(document).encode(),
                                       error="Unhandled")  # fmt: skip
        return outcome

    async def _run_event(self, spec: FunctionSpec, request_id: str, event: bytes) -> None:
        try:
            outcome = await self._run(spec, request_id, event)
        except ApiError as exc:
            log.warning("function %s: event %s not run: %s", spec.name, request_id, exc.message)
            return
        if outcome.error is not None:
            log.info("function %s: event %s ended in an error", spec.name, request_id)

    def _spec(self, rec: FunctionRecord) -> FunctionSpec:
        return FunctionSpec(
            name=rec.name, arn=rec.arn, handler=rec.handler, runtime=rec.runtime,
            role_arn=rec.role, timeout=float(rec.timeout), memory_mb=rec.memory_size,
            revision=rec.revision_id, task_root=self.packages.unpacked(rec.code_hex),
            layer_paths=self.layer_paths(rec.layers), variables=dict(rec.variables),
            reserved_concurrency=rec.reserved_concurrency,
            source_address=lambda_network.source_address(self.store, rec.vpc),
        )  # fmt: skip

    def _network_changed(self, vpc: Vpc) -> None:
        if vpc.interface_ids:
            self.plane.changed("ec2")

    # ---- states ----

    def _update(self, rec: FunctionRecord, call: Call, changes: dict[str, Any], why: str) -> Output:
        updated = rec.but(**changes, last_modified=call.now, revision_id=str(uuid.uuid4()),
                          last_update_status=IN_PROGRESS, last_update_reason=why,
                          last_update_reason_code="")  # fmt: skip
        self.store.put(FUNCTION, rec.name, updated.to_doc())
        self.runner.retire(rec.name)
        self._settle_later(rec.name)
        return function_out(updated, self.layer_sizes(updated.layers))

    def _settle_later(self, name: str) -> None:
        self._background(self._settle(name, SETTLE_DELAY))

    async def resume(self) -> None:
        """After a restart: finish what was Pending or InProgress when the server stopped,
        and give functions kept before VPC functions had interfaces theirs."""
        for rec in self._records():
            if rec.vpc.subnet_ids and not rec.vpc.interface_ids:
                vpc = lambda_network.rewire(self.store, rec.name, Vpc(), rec.vpc)
                self.store.put(FUNCTION, rec.name, rec.but(vpc=vpc).to_doc())
            if rec.state == PENDING or rec.last_update_status == IN_PROGRESS:
                await self._settle(rec.name, 0.0)

    async def _settle(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        rec = self._record(name)
        if rec is None:
            return
        try:
            await asyncio.to_thread(self._spec, rec)  # unpacks the code and layers
        except (OSError, PackageError) as exc:
            log.warning("function %s: its package cannot be unpacked: %s", name, exc)
            failed = rec.but(state=FAILED, state_reason="The function's code cannot be unpacked.",
                             state_reason_code="InvalidZipFileException")  # fmt: skip
            self._put_if_current(rec, failed)
            return
        done = rec.but(state=ACTIVE, state_reason="", state_reason_code="",
                       last_update_status=SUCCESSFUL, last_update_reason="",
                       last_update_reason_code="")  # fmt: skip
        self._put_if_current(rec, done)

    def _put_if_current(self, seen: FunctionRecord, new: FunctionRecord) -> None:
        current = self._record(seen.name)
        if current is not None and current.revision_id == seen.revision_id:
            self.store.put(FUNCTION, new.name, new.to_doc())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- look-ups and checks ----

    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.plane.region}:{self.plane.account}:function:{name}"

    def _records(self) -> list[FunctionRecord]:
        return [FunctionRecord.from_doc(d) for d in self.store.all(FUNCTION)]

    def _record(self, name: str) -> FunctionRecord | None:
        doc = self.store.get(FUNCTION, name)
        return None if doc is None else FunctionRecord.from_doc(doc)

    def function(self, identifier: str, qualifier: str | None) -> FunctionRecord:
        """A function by name, ARN or partial ARN; only $LATEST exists yet."""
        match = _NAME.fullmatch(identifier)
        if match is None:
            raise not_found(f"Function not found: {self.function_arn(identifier[:64])}")
        account = match.group(1) or match.group(2)
        name, qualifier = match.group(3), qualifier or match.group(4)
        rec = self._record(name) if account in (None, self.plane.account) else None
        arn = self.function_arn(name) + (f":{qualifier}" if qualifier else "")
        if rec is None or qualifier not in (None, "$LATEST"):
            raise not_found(f"Function not found: {arn}")
        return rec

    def _updatable(self, identifier: str, revision: str | None) -> FunctionRecord:
        rec = self.function(identifier, None)
        if rec.state == PENDING or rec.last_update_status == IN_PROGRESS:
            raise conflict("The operation cannot be performed at this time. An update is in "
                           f"progress for resource: {rec.arn}")  # fmt: skip
        if revision is not None and revision != rec.revision_id:
            raise ApiError("PreconditionFailedException", "The Revision Id provided does not "
                           "match the latest Revision Id. Call the GetFunction/GetAlias API to "
                           "retrieve the latest Revision Id", 412)  # fmt: skip
        return rec

    def _package(self, code: Params) -> Package:
        if "ZipFile" not in code:
            raise invalid("Sluice takes a function's code as ZipFile only (no S3 or image).")
        try:
            return self.packages.add(code["ZipFile"])
        except PackageError as exc:
            raise invalid(str(exc)) from None

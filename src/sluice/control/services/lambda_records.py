"""Lambda's stored objects as typed records, and their API views.

A function is one "lambda_function" document keyed by its name, a layer version one
"lambda_layer_version" document keyed by `name:version`, and each layer name keeps its last
version number in a "lambda_layer" document (AWS never reuses a deleted version's number). The
documents are these records' fields (`dataclasses.asdict`), so the store stays JSON while the
service works with typed values; the `*_out` functions give the output shape's members.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sluice.control.context import Output, timestamp
from sluice.control.store import Doc

FUNCTION = "lambda_function"
LAYER = "lambda_layer"
LAYER_VERSION = "lambda_layer_version"

PENDING, ACTIVE, FAILED = "Pending", "Active", "Failed"
IN_PROGRESS, SUCCESSFUL = "InProgress", "Successful"


@dataclass(frozen=True, slots=True)
class Vpc:
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    vpc_id: str = ""
    interface_ids: tuple[str, ...] = ()  # the network interfaces Lambda made for it


@dataclass(frozen=True, slots=True)
class FunctionRecord:
    """One function ($LATEST; published versions and aliases are not kept yet)."""

    name: str
    arn: str
    runtime: str
    role: str
    handler: str
    code_sha256: str
    code_size: int
    code_hex: str  # the package's key in the PackageStore
    last_modified: float
    revision_id: str
    description: str = ""
    timeout: int = 3
    memory_size: int = 128
    variables: dict[str, str] = field(default_factory=dict)
    vpc: Vpc = Vpc()
    layers: tuple[str, ...] = ()  # layer version ARNs
    architectures: tuple[str, ...] = ("x86_64",)
    state: str = PENDING
    state_reason: str = "The function is being created."
    state_reason_code: str = "Creating"
    last_update_status: str = ""
    last_update_reason: str = ""
    last_update_reason_code: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    reserved_concurrency: int | None = None

    def to_doc(self) -> Doc:
        return dataclasses.asdict(self)

    @classmethod
    def from_doc(cls, doc: Doc) -> FunctionRecord:
        values = dict(doc)
        vpc = values.pop("vpc", {})
        values["vpc"] = Vpc(
            tuple(vpc.get("subnet_ids", ())),
            tuple(vpc.get("security_group_ids", ())),
            vpc.get("vpc_id", ""),
            tuple(vpc.get("interface_ids", ())),
        )
        values["layers"] = tuple(values.get("layers", ()))
        values["architectures"] = tuple(values.get("architectures", ("x86_64",)))
        return cls(**values)  # fmt: skip

    def but(self, **changes: Any) -> FunctionRecord:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class LayerVersionRecord:
    name: str
    version: int
    layer_arn: str
    code_sha256: str
    code_size: int
    code_hex: str
    created: float
    description: str = ""
    compatible_runtimes: tuple[str, ...] = ()
    compatible_architectures: tuple[str, ...] = ()
    license_info: str = ""

    @property
    def arn(self) -> str:
        return f"{self.layer_arn}:{self.version}"

    def to_doc(self) -> Doc:
        return dataclasses.asdict(self)

    @classmethod
    def from_doc(cls, doc: Doc) -> LayerVersionRecord:
        values = dict(doc)
        for key in ("compatible_runtimes", "compatible_architectures"):
            values[key] = tuple(values.get(key, ()))
        return cls(**values)


def lambda_time(epoch: float) -> str:
    """LastModified as Lambda writes it: 2026-12-04T20:00:00.000+0000."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def function_out(rec: FunctionRecord, layer_sizes: dict[str, int]) -> Output:
    """The FunctionConfiguration members of a function."""
    out: Output = {
        "FunctionName": rec.name, "FunctionArn": rec.arn, "Runtime": rec.runtime,
        "Role": rec.role, "Handler": rec.handler, "CodeSize": rec.code_size,
        "Description": rec.description, "Timeout": rec.timeout, "MemorySize": rec.memory_size,
        "LastModified": lambda_time(rec.last_modified), "CodeSha256": rec.code_sha256,
        "Version": "$LATEST", "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": rec.revision_id, "State": rec.state, "PackageType": "Zip",
        "Architectures": list(rec.architectures), "EphemeralStorage": {"Size": 512},
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{rec.name}"},
    }  # fmt: skip
    if rec.variables:
        out["Environment"] = {"Variables": dict(rec.variables)}
    if rec.vpc.subnet_ids or rec.vpc.security_group_ids:
        out["VpcConfig"] = {
            "SubnetIds": list(rec.vpc.subnet_ids),
            "SecurityGroupIds": list(rec.vpc.security_group_ids),
            "VpcId": rec.vpc.vpc_id,
            "Ipv6AllowedForDualStack": False,
        }
    if rec.layers:
        out["Layers"] = [{"Arn": arn, "CodeSize": layer_sizes.get(arn, 0)} for arn in rec.layers]
    if rec.state != ACTIVE:
        out["StateReason"] = rec.state_reason
        out["StateReasonCode"] = rec.state_reason_code
    if rec.last_update_status:
        out["LastUpdateStatus"] = rec.last_update_status
        if rec.last_update_status != SUCCESSFUL:
            out["LastUpdateStatusReason"] = rec.last_update_reason
        if rec.last_update_reason_code:  # only a failure has one (the model's codes)
            out["LastUpdateStatusReasonCode"] = rec.last_update_reason_code
    return out


def layer_version_out(rec: LayerVersionRecord, *, content: bool) -> Output:
    """A layer version's members (with its Content for Get/Publish, as AWS answers)."""
    out: Output = {
        "LayerVersionArn": rec.arn, "Version": rec.version, "Description": rec.description,
        "CreatedDate": timestamp(rec.created).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000",
    }  # fmt: skip
    if rec.compatible_runtimes:
        out["CompatibleRuntimes"] = list(rec.compatible_runtimes)
    if rec.compatible_architectures:
        out["CompatibleArchitectures"] = list(rec.compatible_architectures)
    if rec.license_info:
        out["LicenseInfo"] = rec.license_info
    if content:
        out["LayerArn"] = rec.layer_arn
        out["Content"] = {"CodeSha256": rec.code_sha256, "CodeSize": rec.code_size}
    return out

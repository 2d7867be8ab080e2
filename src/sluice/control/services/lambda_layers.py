"""Lambda layers: versioned zips a function's environments see beside their task root.

Each PublishLayerVersion keeps a new immutable version (numbers are never reused, even after
DeleteLayerVersion, as on AWS). A function names its layers by version ARN; their packages
are unpacked once, and the function's environments see them merged in its layer order (later
layers over earlier ones) as /opt, with `/opt/python` and its `lib/pythonX.Y/site-packages` on
the import path (`sluice.functions.sandbox`).
A function keeps working after a layer version it uses is deleted, as on AWS.
"""

from __future__ import annotations

import re
from pathlib import Path

from sluice.control.context import Call, Output, Params, Plane
from sluice.control.errors import ApiError
from sluice.control.services.lambda_records import (
    LAYER,
    LAYER_VERSION,
    LayerVersionRecord,
    layer_version_out,
)
from sluice.functions.package import PackageError, PackageStore

_LAYER_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_LAYER_ARN = re.compile(
    r"arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:(\d{12}):layer:([a-zA-Z0-9_-]+):(\d+)"
)
MAX_LAYERS = 5


class LayerService:
    """The layer operations, and what functions need of layers (a base of `Lambda`)."""

    def __init__(self, plane: Plane, packages: PackageStore) -> None:
        self.plane = plane
        self.store = plane.store
        self.packages = packages

    def PublishLayerVersion(self, call: Call, params: Params) -> Output:
        name = self._layer_name(params["LayerName"])
        content = params["Content"]
        if "ZipFile" not in content:
            raise _invalid("Sluice takes a layer's content as ZipFile only (no S3).")
        try:
            package = self.packages.add(content["ZipFile"])
        except PackageError as exc:
            raise _invalid(str(exc)) from None
        counter = self.store.get(LAYER, name) or {"latest": 0}
        version = int(counter["latest"]) + 1
        layer_arn = f"arn:aws:lambda:{self.plane.region}:{self.plane.account}:layer:{name}"
        rec = LayerVersionRecord(
            name=name, version=version, layer_arn=layer_arn, code_sha256=package.sha256,
            code_size=package.size, code_hex=package.hex_digest, created=call.now,
            description=params.get("Description", ""),
            compatible_runtimes=tuple(params.get("CompatibleRuntimes", ())),
            compatible_architectures=tuple(params.get("CompatibleArchitectures", ())),
            license_info=params.get("LicenseInfo", ""),
        )  # fmt: skip
        with self.store.batch():
            self.store.put(LAYER, name, {"latest": version})
            self.store.put(LAYER_VERSION, f"{name}:{version}", rec.to_doc())
        return layer_version_out(rec, content=True)

    def GetLayerVersion(self, call: Call, params: Params) -> Output:
        name = self._layer_name(params["LayerName"])
        return layer_version_out(self._version(name, params["VersionNumber"]), content=True)

    def GetLayerVersionByArn(self, call: Call, params: Params) -> Output:
        return layer_version_out(self._by_arn(params["Arn"]), content=True)

    def ListLayerVersions(self, call: Call, params: Params) -> Output:
        name = self._layer_name(params["LayerName"])
        runtime = params.get("CompatibleRuntime")
        found = [
            LayerVersionRecord.from_doc(d)
            for d in self.store.all(LAYER_VERSION)
            if d["name"] == name
            and (runtime is None or runtime in d.get("compatible_runtimes", ()))
        ]
        found.sort(key=lambda r: -r.version)
        return {"LayerVersions": [layer_version_out(r, content=False) for r in found]}

    def DeleteLayerVersion(self, call: Call, params: Params) -> Output:
        name = self._layer_name(params["LayerName"])
        self.store.delete(LAYER_VERSION, f"{name}:{params['VersionNumber']}")
        return {}  # deleting a missing version succeeds, as on AWS

    # ---- for functions ----

    def _layers(self, arns: list[str] | None) -> tuple[str, ...]:
        if not arns:
            return ()
        if len(arns) > MAX_LAYERS:
            raise _invalid(f"Cannot reference more than {MAX_LAYERS} layers.")
        for arn in arns:
            self._by_arn(arn)
        return tuple(arns)

    def layer_sizes(self, arns: tuple[str, ...]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for arn in arns:
            rec = self._find_arn(arn)
            sizes[arn] = rec.code_size if rec is not None else 0
        return sizes

    def layers_code_size(self) -> int:
        """The zips of every kept layer version, in bytes."""
        return sum(LayerVersionRecord.from_doc(doc).code_size
                   for doc in self.store.all(LAYER_VERSION))  # fmt: skip

    def layer_paths(self, arns: tuple[str, ...]) -> tuple[Path, ...]:
        """The layers' unpacked directories, in the function's order (unpacked if need be)."""
        paths: list[Path] = []
        for arn in arns:
            rec = self._find_arn(arn)
            if rec is None:
                continue  # deleted since: its package is still kept, but not found by ARN
            paths.append(self.packages.unpacked(rec.code_hex))
        return tuple(paths)

    # ---- look-ups ----

    def _find_arn(self, arn: str) -> LayerVersionRecord | None:
        match = _LAYER_ARN.fullmatch(arn)
        if match is None or match.group(1) != self.plane.account:
            return None
        doc = self.store.get(LAYER_VERSION, f"{match.group(2)}:{int(match.group(3))}")
        return None if doc is None else LayerVersionRecord.from_doc(doc)

    def _by_arn(self, arn: str) -> LayerVersionRecord:
        rec = self._find_arn(arn)
        if rec is None:
            raise _invalid(f"Layer version {arn} does not exist.")
        return rec

    def _version(self, name: str, version: int) -> LayerVersionRecord:
        doc = self.store.get(LAYER_VERSION, f"{name}:{version}")
        if doc is None:
            raise ApiError("ResourceNotFoundException",
                           "The resource you requested does not exist.", 404)  # fmt: skip
        return LayerVersionRecord.from_doc(doc)

    def _layer_name(self, text: str) -> str:
        prefix = f"arn:aws:lambda:{self.plane.region}:{self.plane.account}:layer:"
        name = text.removeprefix(prefix)
        if not _LAYER_NAME.fullmatch(name):
            raise _invalid(f"Invalid layer name: {text[:140]}")
        return name


def _invalid(message: str) -> ApiError:
    return ApiError("InvalidParameterValueException", message, 400)

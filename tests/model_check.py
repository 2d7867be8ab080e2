"""Responses checked against botocore's model of their operation's output.

`checked` calls an operation with a boto3 client and holds its response to the output
shape: botocore's ParamValidator (members, required members, types), then what it lets
pass (`check_values`): timestamps must be timezone-aware datetimes, enum strings one of
their values. `cli_checked` does the same for the aws CLI's JSON output of an operation
(its timestamps are text, which must parse).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import botocore.session
from botocore import xform_name
from botocore.utils import parse_to_aware_datetime
from botocore.validate import ParamValidator


def checked(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    """Call `operation` with boto3; its response must fit botocore's output shape."""
    method = next(m for m, op in client.meta.method_to_api_mapping.items() if op == operation)
    response: dict[str, Any] = getattr(client, method)(**params)
    response.pop("ResponseMetadata", None)
    check_output(client.meta.service_model.operation_model(operation).output_shape, response,
                 operation)  # fmt: skip
    return response


def cli_checked(aws: Callable[..., Any], service: str, operation: str, *args: str) -> Any:
    """Run `aws SERVICE OPERATION ARGS` (`aws` runs the CLI and parses its JSON output);
    the output must fit the operation's output shape."""
    output = aws(service, xform_name(operation, "-"), *args)
    model = botocore.session.get_session().get_service_model(service)
    shape = model.operation_model(operation).output_shape
    check_output(shape, output or {}, f"aws {service} {operation}", text_timestamps=True)
    return output


def check_output(shape: Any, value: dict[str, Any], where: str,
                 text_timestamps: bool = False) -> None:  # fmt: skip
    """`value` fits `shape` (an operation's output shape; None: the output is empty)."""
    if shape is None:
        assert value == {}, f"{where}: {value!r}"
        return
    report = ParamValidator().validate(value, shape)
    assert not report.has_errors(), report.generate_report()
    check_values(value, shape, where, text_timestamps)


def check_values(value: Any, shape: Any, where: str, text_timestamps: bool = False) -> None:
    """What ParamValidator lets pass: timestamps must be datetimes (or, from the CLI, text
    that parses to one), strings in their enum."""
    if shape.type_name == "structure":
        for name, member in value.items():
            check_values(member, shape.members[name], f"{where}.{name}", text_timestamps)
    elif shape.type_name == "list":
        for item in value:
            check_values(item, shape.member, where, text_timestamps)
    elif shape.type_name == "map":
        for item in value.values():
            check_values(item, shape.value, where, text_timestamps)
    elif shape.type_name == "timestamp" and text_timestamps:
        assert isinstance(value, str) and parse_to_aware_datetime(value).tzinfo, where
    elif shape.type_name == "timestamp":
        assert isinstance(value, datetime) and value.tzinfo is not None, where
    elif shape.type_name == "string" and shape.enum:
        assert value in shape.enum, f"{where}: {value!r}"

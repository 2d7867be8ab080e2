"""The control plane's defaults, apart from the plane itself: the command line reads them
for every `sluice` command, which must not import the plane (aiohttp, botocore's models)
to start a proxy."""

from __future__ import annotations

DEFAULT_LISTEN = ("127.0.0.1", 4510)
DEFAULT_REGION = "us-east-1"
DEFAULT_VPC_CIDR = "127.20.0.0/16"
ENGINE_PORTS = {"MYSQL": 3306, "POSTGRESQL": 5432}
# The account's concurrency: functions' environments alive at once, over all functions.
# Lambda's default quota is 1000; here each one is a process of this machine.
DEFAULT_CONCURRENT_EXECUTIONS = 100
# How long the execution-role credentials given to functions' environments last: STS's
# default session by default, at most the longest role session STS grants.
DEFAULT_FUNCTION_CREDENTIALS_SECONDS = 3600
MAX_FUNCTION_CREDENTIALS_SECONDS = 43200

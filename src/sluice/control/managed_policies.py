"""The AWS-managed IAM policies every account sees, seeded into the store.

On AWS a handful of policies owned by AWS itself (`arn:aws:iam::aws:policy/...`)
exist in every account and can be attached but not changed. Scripts written for
AWS attach them by ARN (a Lambda role gets AWSLambdaBasicExecutionRole, an admin
user AdministratorAccess), so the control plane keeps the same ones as ordinary
"iam_policy" documents marked `_managed`, ensured at each start by
`ensure_managed_policies`. Their documents are the ones AWS publishes (written
out here by hand; ReadOnlyAccess is abridged to the read actions of the services
this project cares about plus the common ones). Seeding is idempotent, so a restart
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sluice.control import ids
from sluice.control.store import Store

MANAGED_ARN_PREFIX = "arn:aws:iam::aws:policy/"
POLICY_KIND = "iam_policy"


@dataclass(frozen=True, slots=True)
class ManagedPolicy:
    """One AWS-managed policy: where it lives and what it allows."""

    name: str
    path: str
    description: str
    created: float  # epoch seconds of the date AWS shows as CreateDate
    document: dict[str, Any]
    version: str = "v1"  # the version AWS shows as default

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::aws:policy{self.path}{self.name}"


def _allow(
    actions: list[str] | str, resource: list[str] | str = "*", sid: str = ""
) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resource}
    return {"Sid": sid, **statement} if sid else statement


def _doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


_SECRETS_MANAGER_BASE = [
    "secretsmanager:*",
    "cloudformation:CreateChangeSet",
    "cloudformation:DescribeChangeSet",
    "cloudformation:DescribeStackResource",
    "cloudformation:DescribeStacks",
    "cloudformation:ExecuteChangeSet",
    "docdb-elastic:GetCluster",
    "docdb-elastic:ListClusters",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
    "kms:DescribeKey",
    "kms:ListAliases",
    "kms:ListKeys",
    "lambda:ListFunctions",
    "rds:DescribeDBClusters",
    "rds:DescribeDBInstances",
    "redshift:DescribeClusters",
    "redshift-serverless:ListWorkgroups",
    "redshift-serverless:GetNamespace",
    "tag:GetResources",
]

_SECRETS_MANAGER_LAMBDA = [
    "lambda:AddPermission",
    "lambda:CreateFunction",
    "lambda:GetFunction",
    "lambda:InvokeFunction",
    "lambda:UpdateFunctionConfiguration",
]

_LOGS_WRITE = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]

_VPC_ACCESS = [
    *_LOGS_WRITE,
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]

# Abridged: the real policy lists several thousand read actions of every service.
_READ_ONLY = [
    "acm:Describe*", "acm:Get*", "acm:List*",
    "autoscaling:Describe*",
    "cloudformation:Describe*", "cloudformation:Get*", "cloudformation:List*",
    "cloudwatch:Describe*", "cloudwatch:Get*", "cloudwatch:List*",
    "dynamodb:BatchGetItem", "dynamodb:Describe*", "dynamodb:Get*", "dynamodb:List*",
    "dynamodb:Query", "dynamodb:Scan",
    "ec2:Describe*", "ec2:Get*",
    "ecr:BatchGetImage", "ecr:Describe*", "ecr:Get*", "ecr:List*",
    "ecs:Describe*", "ecs:List*",
    "elasticloadbalancing:Describe*",
    "iam:Generate*", "iam:Get*", "iam:List*", "iam:Simulate*",
    "kms:Describe*", "kms:Get*", "kms:List*",
    "lambda:Get*", "lambda:List*",
    "logs:Describe*", "logs:FilterLogEvents", "logs:Get*", "logs:List*",
    "logs:StartQuery", "logs:StopQuery", "logs:TestMetricFilter",
    "pi:DescribeDimensionKeys", "pi:GetResourceMetrics",
    "rds:Describe*", "rds:Download*", "rds:ListTagsForResource",
    "s3:Describe*", "s3:Get*", "s3:List*",
    "secretsmanager:DescribeSecret", "secretsmanager:GetResourcePolicy",
    "secretsmanager:ListSecretVersionIds", "secretsmanager:ListSecrets",
    "sns:Get*", "sns:List*",
    "sqs:Get*", "sqs:List*", "sqs:Receive*",
    "sts:GetCallerIdentity",
    "tag:Get*",
]  # fmt: skip

MANAGED_POLICIES: tuple[ManagedPolicy, ...] = (
    ManagedPolicy(
        "AdministratorAccess",
        "/",
        "Provides full access to AWS services and resources.",
        1423247986.0,  # 2015-02-06T18:39:46Z
        _doc(_allow("*")),
    ),
    ManagedPolicy(
        "ReadOnlyAccess",
        "/",
        "Provides read-only access to AWS services and resources.",
        1423247988.0,  # 2015-02-06T18:39:48Z
        _doc(_allow(_READ_ONLY)),
    ),
    ManagedPolicy(
        "SecretsManagerReadWrite",
        "/",
        "Provides read/write access to AWS Secrets Manager via the AWS Management Console. "
        "Note: this exludes IAM actions, so combine with IAMFullAccess if rotation "
        "configuration is required.",
        1522865129.0,  # 2018-04-04T18:05:29Z
        _doc(
            _allow(_SECRETS_MANAGER_BASE, sid="BasePermissions"),
            _allow(
                _SECRETS_MANAGER_LAMBDA,
                "arn:aws:lambda:*:*:function:SecretsManager*",
                sid="LambdaPermissions",
            ),
            _allow(
                ["serverlessrepo:CreateCloudFormationChangeSet", "serverlessrepo:GetApplication"],
                "arn:aws:serverlessrepo:*:*:applications/SecretsManager*",
                sid="SARPermissions",
            ),
            _allow(
                ["s3:GetObject"],
                [
                    "arn:aws:s3:::awsserverlessrepo-changesets*",
                    "arn:aws:s3:::secrets-manager-rotation-apps-*/*",
                ],
                sid="S3Permissions",
            ),
        ),
        "v5",
    ),
    ManagedPolicy(
        "AWSLambdaBasicExecutionRole",
        "/service-role/",
        "Provides write permissions to CloudWatch Logs.",
        1428591823.0,  # 2015-04-09T15:03:43Z
        _doc(_allow(_LOGS_WRITE)),
    ),
    ManagedPolicy(
        "AWSLambdaVPCAccessExecutionRole",
        "/service-role/",
        "Provides minimum permissions for a Lambda function to execute while accessing a "
        "resource within a VPC - create, describe, delete network interfaces and write "
        "permissions to CloudWatch Logs.",
        1455232526.0,  # 2016-02-11T23:15:26Z
        _doc(_allow(_VPC_ACCESS, sid="AWSLambdaVPCAccessExecutionPermissions")),
        "v3",
    ),
)


def managed_policy(name: str) -> ManagedPolicy | None:
    """The AWS-managed policy of that name, if this project knows it."""
    return next((p for p in MANAGED_POLICIES if p.name == name), None)


def ensure_managed_policies(store: Store) -> None:
    """Create (or bring up to date) the AWS-managed "iam_policy" documents.

    Idempotent: an existing document keeps its id; its published document is
    refreshed when this module's copy changed, and its attachment count is
    recounted from the users and roles (bootstrap attaches AdministratorAccess
    to the admin user before this runs).
    """
    with store.batch():
        for policy in MANAGED_POLICIES:
            existing = store.get(POLICY_KIND, policy.arn)
            doc = _policy_doc(policy, existing, _attachments(store, policy.arn))
            if doc != existing:
                store.put(POLICY_KIND, policy.arn, doc)


def _attachments(store: Store, arn: str) -> int:
    entities = [*store.all("iam_user"), *store.all("iam_role")]
    return sum(arn in e.get("AttachedPolicies", []) for e in entities)


def _policy_doc(
    policy: ManagedPolicy, existing: dict[str, Any] | None, count: int
) -> dict[str, Any]:
    old = existing or {}
    return {
        "PolicyName": policy.name,
        "PolicyId": old.get("PolicyId") or ids.unique_id("ANPA"),
        "Arn": policy.arn,
        "Path": policy.path,
        "DefaultVersionId": policy.version,
        "AttachmentCount": count,
        "IsAttachable": True,
        "CreateDate": policy.created,
        "UpdateDate": policy.created,
        "Description": policy.description,
        "Versions": {policy.version: {"Document": policy.document, "CreateDate": policy.created}},
        "_managed": True,
    }

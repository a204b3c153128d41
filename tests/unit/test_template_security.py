"""template.yaml's security settings, as a cloud team's scanner (checkov, run by `make lint`)
asks for them: every finding the template does not fix is skipped in its Metadata with a reason,
and the fixes are wired: a versioned payload bucket, the DeadLetter function's reserved
concurrency, the optional VPC and the optional customer-managed KMS key. The template is
resolved the way the local stack (and CloudFormation) resolves it; no checkov needed here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet

from llmbatch.local.template import Resolver, function_spec, load_template, parameter_values

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
PSEUDO = {"AWS::StackName": "s", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
FUNCTIONS = ("Worker", "DeadLetter", "LanePoller")
QUEUES = ("RequestQueueHigh", "RequestQueue", "RequestQueueLow", "DeadLetterQueue")
TABLES = ("JobsTable", "ResultsTable")
#: Findings the template fixes (on every resource they apply to, unless named): none may come back as a skip.
FIXED = {
    "CKV_AWS_19": "*",  # bucket encryption
    "CKV_AWS_21": "*",  # bucket versioning
    "CKV_AWS_27": "*",  # queue encryption (a customer-managed key when given)
    "CKV_AWS_115": "DeadLetter",  # reserved concurrency (the worker's skip says why not there)
    "CKV_AWS_117": "*",  # functions in a VPC when given
    "CKV_AWS_119": "*",  # tables with a customer-managed key when given
    "CKV_AWS_173": "*",  # the functions' environment with a customer-managed key when given
}
#: The DeadLetter function's event source reads with at most this many invocations at once.
DEAD_LETTER_MAX_CONCURRENCY = 2


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def resolver(template: dict[str, Any], **overrides: str) -> Resolver:
    r = Resolver(template, parameter_values(template, overrides), PSEUDO)
    for name in template["Resources"]:  # stand-ins for what CloudFormation would create
        r.refs[name] = f"s-{name}"
        r.attrs[name] = {"Arn": f"arn:aws:x:::{name}", "QueueName": name}
    return r


def properties(template: dict[str, Any], name: str, **overrides: str) -> dict[str, Any]:
    resolved: dict[str, Any] = resolver(template, **overrides).resolve(template["Resources"][name]["Properties"])
    return resolved


def function(template: dict[str, Any], name: str, **overrides: str) -> dict[str, Any]:
    """A function's properties, Globals merged, as CloudFormation would see them."""
    resolved: dict[str, Any] = resolver(template, **overrides).resolve(function_spec(template, name))
    return resolved


def statements(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in spec.get("Policies", []) if isinstance(p, dict) for s in p.get("Statement", [])]


def kms_statements(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in statements(spec) if any(str(a).startswith("kms:") for a in as_list(s["Action"]))]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------------------------
# checkov's skips
# --------------------------------------------------------------------------------------------


def test_every_checkov_skip_names_a_check_and_says_why_in_one_line(template: dict[str, Any]) -> None:
    # GIVEN every skip in the resources' Metadata, where checkov reads them
    skips = [
        (name, skip)
        for name, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert len(skips) >= 3  # the walk reaches them

    # WHEN / THEN each names one check and carries a reason of its own, on one line
    for name, skip in skips:
        assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), (name, skip)
        comment = skip.get("comment", "")
        assert isinstance(comment, str) and len(comment.split()) >= 5, (name, skip)
        assert "\n" not in comment.strip(), (name, skip)
    # and no resource skips a check twice, nor skips what the template fixes
    ids = [(name, skip["id"]) for name, skip in skips]
    assert len(ids) == len(set(ids))
    assert not [(name, check) for name, check in ids if FIXED.get(check) in ("*", name)]


# --------------------------------------------------------------------------------------------
# Python runtime
# --------------------------------------------------------------------------------------------


def test_the_runtime_parameter_the_layer_build_and_requires_python_agree(template: dict[str, Any]) -> None:
    # GIVEN the runtimes the template allows, the layer build's default and pyproject's range
    runtime = template["Parameters"]["PythonRuntime"]
    versions = [v.removeprefix("python") for v in runtime["AllowedValues"]]
    layer_default = re.search(r"^LAYER_PYTHON_VERSION \?= (\S+)$", (ROOT / "shared" / "Makefile").read_text(), re.M)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]

    # WHEN / THEN the layer's wheels are built for the default runtime, and the package installs
    # on every runtime the template allows (and no older one)
    assert layer_default and layer_default.group(1) == runtime["Default"].removeprefix("python")
    assert all(v in SpecifierSet(requires) for v in versions)
    assert "3.10" not in SpecifierSet(requires)


# --------------------------------------------------------------------------------------------
# Payload bucket
# --------------------------------------------------------------------------------------------


def test_the_payload_bucket_is_versioned_and_old_versions_go(template: dict[str, Any]) -> None:
    # GIVEN the payload bucket, with the default days and with 7
    default = properties(template, "PayloadBucket")
    week = properties(template, "PayloadBucket", NoncurrentVersionDays="7")

    # WHEN its versioning and its rule for noncurrent versions are read
    def noncurrent_rule(props: dict[str, Any]) -> dict[str, Any]:
        (rule,) = [r for r in props["LifecycleConfiguration"]["Rules"] if "NoncurrentVersionExpiration" in r]
        return rule

    # THEN it keeps versions (it holds results), and overwritten or deleted objects' versions
    # expire after the parameter's days for every key (no prefix), leaving no lone delete markers
    assert default["VersioningConfiguration"] == {"Status": "Enabled"}
    rule = noncurrent_rule(default)
    assert rule["Status"] == "Enabled"
    assert "Prefix" not in rule and "Filter" not in rule
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == str(
        template["Parameters"]["NoncurrentVersionDays"]["Default"]
    )
    assert rule["ExpiredObjectDeleteMarker"] is True
    assert noncurrent_rule(week)["NoncurrentVersionExpiration"]["NoncurrentDays"] == "7"


# --------------------------------------------------------------------------------------------
# DeadLetter's reserved concurrency
# --------------------------------------------------------------------------------------------


def test_the_dead_letter_function_reserves_at_least_its_event_sources_concurrency(template: dict[str, Any]) -> None:
    # GIVEN the DeadLetter function by default, and with the reservation turned off (0)
    default = function(template, "DeadLetter")
    off = function(template, "DeadLetter", DeadLetterReservedConcurrency="0")
    (event,) = [e["Properties"] for e in default["Events"].values() if e["Type"] == "SQS"]

    # WHEN / THEN by default it reserves (and is capped at) no less than its event source reads
    # at once, so Lambda never throttles it; 0 sets no reservation rather than stopping it
    assert int(event["ScalingConfig"]["MaximumConcurrency"]) == DEAD_LETTER_MAX_CONCURRENCY
    assert int(default["ReservedConcurrentExecutions"]) >= DEAD_LETTER_MAX_CONCURRENCY
    assert "ReservedConcurrentExecutions" not in off
    # the worker is capped by its event source's MaximumConcurrency instead (a checkov skip says so)
    assert "ReservedConcurrentExecutions" not in function(template, "Worker")


# --------------------------------------------------------------------------------------------
# VPC
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FUNCTIONS)
def test_the_functions_run_in_a_vpc_only_when_subnets_and_groups_are_given(template: dict[str, Any], name: str) -> None:
    # GIVEN the function by default, and with two subnets and a security group
    default = function(template, name)
    in_vpc = function(template, name, SubnetIds="subnet-1,subnet-2", SecurityGroupIds="sg-1")

    # WHEN / THEN by default there is no VpcConfig; with them, exactly those
    assert "VpcConfig" not in default
    assert in_vpc["VpcConfig"] == {"SubnetIds": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}


def test_the_vpc_condition_is_resolved_before_sam_sees_it(template: dict[str, Any]) -> None:
    # GIVEN / WHEN the template's transforms
    transforms = as_list(template["Transform"])

    # THEN CloudFormation's language extensions run first: they resolve the If around VpcConfig,
    # so SAM attaches its VPC access policy (ENI actions on "*") only to functions in a VPC
    assert transforms == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]


def test_subnets_and_security_groups_are_asked_for_together(template: dict[str, Any]) -> None:
    # GIVEN the template's rules (checked by CloudFormation before it changes anything)
    rules = template["Rules"]

    # WHEN / THEN giving one of SubnetIds and SecurityGroupIds without the other is refused
    def is_empty(parameter: str) -> dict[str, Any]:
        return {"Fn::EachMemberEquals": [{"Ref": parameter}, ""]}

    pairs = [
        (rule["RuleCondition"], assertion["Assert"]) for rule in rules.values() for assertion in rule["Assertions"]
    ]
    assert sorted(pairs, key=repr) == sorted(
        [
            ({"Fn::Not": [is_empty("SubnetIds")]}, {"Fn::Not": [is_empty("SecurityGroupIds")]}),
            ({"Fn::Not": [is_empty("SecurityGroupIds")]}, {"Fn::Not": [is_empty("SubnetIds")]}),
        ],
        key=repr,
    )


# --------------------------------------------------------------------------------------------
# Customer-managed KMS key
# --------------------------------------------------------------------------------------------


def test_without_a_key_everything_keeps_aws_managed_encryption(template: dict[str, Any]) -> None:
    # GIVEN / WHEN the stack's resources with the default (empty) KmsKeyArn
    queues = [properties(template, q) for q in QUEUES]
    tables = [properties(template, t)["SSESpecification"] for t in TABLES]
    (bucket,) = properties(template, "PayloadBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    specs = [function(template, f) for f in FUNCTIONS]

    # THEN queues use SQS-managed SSE, tables DynamoDB's AWS-managed key, the bucket SSE-S3, the
    # functions' environment Lambda's own key, and no function may use any KMS key
    assert all(q["SqsManagedSseEnabled"] is True and "KmsMasterKeyId" not in q for q in queues)
    assert tables == [{"SSEEnabled": True}] * len(TABLES)
    assert bucket == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    assert all("KmsKeyArn" not in s and kms_statements(s) == [] for s in specs)


def test_a_key_given_encrypts_queues_tables_bucket_and_environment(template: dict[str, Any]) -> None:
    # GIVEN / WHEN the stack's resources with a customer-managed key
    queues = [properties(template, q, KmsKeyArn=KEY_ARN) for q in QUEUES]
    tables = [properties(template, t, KmsKeyArn=KEY_ARN)["SSESpecification"] for t in TABLES]
    encryption = properties(template, "PayloadBucket", KmsKeyArn=KEY_ARN)["BucketEncryption"]
    specs = [function(template, f, KmsKeyArn=KEY_ARN) for f in FUNCTIONS]

    # THEN each uses that key (SQS refuses both kinds of SSE at once)
    for queue in queues:
        assert queue["KmsMasterKeyId"] == KEY_ARN
        assert "SqsManagedSseEnabled" not in queue
    assert tables == [{"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": KEY_ARN}] * len(TABLES)
    assert encryption["ServerSideEncryptionConfiguration"] == [
        {
            "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_ARN},
            "BucketKeyEnabled": True,
        }
    ]
    assert [s["KmsKeyArn"] for s in specs] == [KEY_ARN] * len(FUNCTIONS)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_function_may_use_the_given_key_only_to_decrypt_and_make_data_keys(
    template: dict[str, Any], name: str
) -> None:
    # GIVEN / WHEN the function's KMS statements with a key
    granted = kms_statements(function(template, name, KmsKeyArn=KEY_ARN))

    # THEN one statement allows what SQS, S3 and the environment need, on that key alone
    assert granted == [
        {
            "Sid": "UseTheStackKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": KEY_ARN,
        }
    ]


# --------------------------------------------------------------------------------------------
# The lane poller's Bedrock batch permissions
# --------------------------------------------------------------------------------------------

MODELS = (
    "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
    "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0",
)
BATCH_JOBS = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/*"
BATCH_ROLE = "arn:aws:iam::123456789012:role/s-BedrockBatchRole"


def grants(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(a, r) for s in statements(spec) for a in as_list(s["Action"]) for r in as_list(s["Resource"])}


@pytest.mark.parametrize("models", [(), MODELS[:1], MODELS])
def test_the_lane_poller_passes_only_the_batch_role_and_reaches_only_its_models_and_jobs(
    template: dict[str, Any], models: tuple[str, ...]
) -> None:
    # GIVEN the LanePoller with no, one and two configured Bedrock models
    spec = function(template, "LanePoller", BedrockModelArns=",".join(models))
    granted = grants(spec)

    # WHEN / THEN its Bedrock and IAM grants are exactly: create jobs on those models and in
    # this account's job ARNs, follow and stop those jobs, pass the one batch role; none at all
    # without models
    bedrock = {g for g in granted if g[0].split(":")[0] in ("bedrock", "iam")}
    expected = {
        *{("bedrock:CreateModelInvocationJob", m) for m in models},
        ("bedrock:CreateModelInvocationJob", BATCH_JOBS),
        ("bedrock:GetModelInvocationJob", BATCH_JOBS),
        ("bedrock:StopModelInvocationJob", BATCH_JOBS),
        ("iam:PassRole", BATCH_ROLE),
    }
    assert bedrock == (expected if models else set())
    # ... the role only to Bedrock
    for s in statements(spec):
        if "iam:PassRole" in as_list(s["Action"]):
            assert s["Condition"] == {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}}
    # ... and no wildcard beyond the jobs' ARNs and object prefixes of the payload bucket
    bucket = "arn:aws:x:::PayloadBucket"
    assert not [a for a, _ in granted if "*" in a]
    assert {r for _, r in granted if "*" in r} <= {BATCH_JOBS} | {
        f"{bucket}/{prefix}/*" for prefix in ("batch", "results", "failed")
    }
    assert spec["Environment"]["Variables"]["BATCH_ROLE_ARN"] == BATCH_ROLE

"""template.yaml's storage settings the store relies on: the jobs index, which payloads may
expire, and the DeadLetter function's bucket (read the way the local stack reads it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmbatch.local.template import function_spec, load_template
from shared.deadletter import BODY_KEY_PREFIX
from shared.payloads import request_body_prefix
from shared.store.jobs_table import JOB_KIND, JOBS_INDEX
from shared.store.result_fit import failed_request_key, response_key

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def test_the_jobs_table_has_the_sparse_index_list_jobs_queries(template: dict[str, Any]) -> None:
    # GIVEN the jobs table
    props = template["Resources"]["JobsTable"]["Properties"]
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}

    # WHEN its index is looked up by the name the store queries
    (index,) = [i for i in props["GlobalSecondaryIndexes"] if i["IndexName"] == JOBS_INDEX]
    keys = {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}

    # THEN it is keyed by kind (only meta items carry it) and creation time, both strings,
    # and holds keys only (list_jobs reads each job by key)
    assert keys == {"HASH": "kind", "RANGE": "created_at"}
    assert types["kind"] == types["created_at"] == "S"
    assert index["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert JOB_KIND == "job"


def test_only_request_bodies_expire_from_the_payload_bucket(template: dict[str, Any]) -> None:
    # GIVEN the payload bucket's lifecycle rules
    rules = template["Resources"]["PayloadBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = [r for r in rules if "ExpirationInDays" in r or "ExpirationDate" in r]

    # WHEN / THEN each expiring rule is limited to submit's request bodies: offloaded answers,
    # failed requests kept for retry and dead letters' bodies never expire
    assert expiring
    request_prefix = request_body_prefix("job-1").split("job-1")[0]
    for rule in expiring:
        prefix = rule.get("Prefix") or rule.get("Filter", {}).get("Prefix")
        assert prefix == request_prefix, rule
    kept = [response_key("job-1", "c"), failed_request_key("job-1", "c"), f"{BODY_KEY_PREFIX}job-1/x.json"]
    assert not [k for k in kept if k.startswith(request_prefix)]


def test_the_dead_letter_function_may_only_put_its_own_bodies_in_the_bucket(template: dict[str, Any]) -> None:
    # GIVEN the DeadLetter function (Globals merged)
    spec = function_spec(template, "DeadLetter")

    # WHEN its environment and its S3 statements are read
    s3 = [
        s
        for policy in spec["Policies"]
        for s in policy.get("Statement", [])
        if any(str(a).startswith("s3:") for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
    ]

    # THEN it knows the bucket, and may put objects under deadletters/ only, nothing else
    assert spec["Environment"]["Variables"]["PAYLOAD_BUCKET"] == {"Ref": "PayloadBucket"}
    assert [(s["Action"], s["Resource"]) for s in s3] == [
        ("s3:PutObject", {"Fn::Sub": f"${{PayloadBucket.Arn}}/{BODY_KEY_PREFIX}*"})
    ]

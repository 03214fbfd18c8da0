"""infra/s3 policies: valid documents an S3 API accepts, and exactly right for what the pipeline does.

The pipeline's real requests (recorded by the test endpoint during a release, promotion, download and
rollback) are checked against the IAM policy and the bucket policy with a small evaluator of the
IAM features these documents use: every request is allowed, and nothing more is.
"""

from __future__ import annotations

import fnmatch
import json
import string
import uuid
from pathlib import Path
from urllib.parse import parse_qs

import boto3
import pytest

from tasks.registry.aliases import promote_if_unchanged
from tasks.registry.config import StoreConfig
from tasks.registry.release import download_release, list_versions, publish_release
from tasks.registry.rollback import roll_back
from tasks.registry.store import S3Store
from tests.conftest import release_draft
from tests.integration.conftest import PROJECT
from tests.s3_endpoint import Request, S3Endpoint

pytestmark = pytest.mark.integration

INFRA = PROJECT / "infra" / "s3"
PREFIX = "team/registry"
KMS_KEY = "arn:aws:kms:eu-west-1:123456789012:key/0b1c2d3e-aaaa-bbbb-cccc-0123456789ab"


def load(name: str, bucket: str) -> dict:
    text = (INFRA / name).read_text()
    rendered = string.Template(text).substitute(BUCKET=bucket, PREFIX=PREFIX, KMS_KEY_ARN=KMS_KEY, REGION="eu-west-1")
    return json.loads(rendered)


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def condition_holds(operator: str, key: str, expected, context: dict[str, str]) -> bool:
    value = context.get(key)
    expected = [str(e).lower() if operator == "Bool" else str(e) for e in as_list(expected)]
    if operator == "Null":
        return (value is None) == (expected == ["true"])
    if value is None:
        return operator.startswith("StringNot")  # negated operators match an absent key, as in IAM
    if operator == "Bool":
        return value.lower() in expected
    if operator == "StringEquals":
        return value in expected
    if operator == "StringNotEquals":
        return value not in expected
    if operator == "StringLike":
        return any(fnmatch.fnmatchcase(value, e) for e in expected)
    raise AssertionError(f"evaluator does not know {operator}")


def applies(statement: dict, action: str, resource: str, context: dict[str, str]) -> bool:
    return (
        any(fnmatch.fnmatchcase(action, a) for a in as_list(statement["Action"]))
        and any(fnmatch.fnmatchcase(resource, r) for r in as_list(statement["Resource"]))
        and all(
            condition_holds(op, key, expected, context)
            for op, pairs in statement.get("Condition", {}).items()
            for key, expected in pairs.items()
        )
    )


def decide(policy: dict, action: str, resource: str, context: dict[str, str]) -> str:
    """'deny' (explicit), 'allow', or 'implicit' (no statement applies)."""
    effects = {s["Effect"] for s in policy["Statement"] if applies(s, action, resource, context)}
    return "deny" if "Deny" in effects else "allow" if "Allow" in effects else "implicit"


def iam_request(request: Request, bucket: str) -> tuple[str, str, dict[str, str]]:
    """The IAM action, resource and condition context S3 evaluates for one recorded request."""
    _, _, rest = request.path.partition(f"/{bucket}")
    key = rest.lstrip("/")
    query = parse_qs(request.query, keep_blank_values=True)
    context = {"aws:SecureTransport": "true"}  # on AWS the pipeline speaks https; the test endpoint is http
    if not key:
        assert request.method == "GET" and "list-type" in query, request
        context["s3:prefix"] = query.get("prefix", [""])[0]
        return "s3:ListBucket", f"arn:aws:s3:::{bucket}", context
    resource = f"arn:aws:s3:::{bucket}/{key}"
    if request.method in ("GET", "HEAD"):
        return ("s3:ListMultipartUploadParts" if "uploadId" in query else "s3:GetObject"), resource, context
    if request.method == "DELETE":
        return ("s3:AbortMultipartUpload" if "uploadId" in query else "s3:DeleteObject"), resource, context
    # PutObject and CreateMultipartUpload carry the encryption header; S3 checks it when an upload
    # starts, and the parts and the completion of a multipart upload inherit it.
    if "partNumber" not in query and not (request.method == "POST" and "uploadId" in query):
        context["s3:x-amz-server-side-encryption"] = request.sse or ""
        if request.sse is None:
            del context["s3:x-amz-server-side-encryption"]
    return "s3:PutObject", resource, context


@pytest.fixture
def pipeline_requests(s3_server: S3Endpoint, tmp_path: Path) -> tuple[str, list[Request]]:
    """Everything the registry does on S3 — release (with a multipart file), promote, list, download, roll back."""
    bucket = f"infra-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server.url).create_bucket(Bucket=bucket)
    config = StoreConfig(uri=f"s3://{bucket}/{PREFIX}", endpoint_url=s3_server.url, sse="aws:kms", kms_key_id=KMS_KEY)
    start = len(s3_server.requests)
    store = S3Store(config)
    versions = []
    for n in range(2):
        big = tmp_path / f"big{n}.bin"
        big.write_bytes(bytes([n]) * (9 * 2**20))
        small = tmp_path / f"small{n}.json"
        small.write_text(json.dumps({"n": n}))
        version = publish_release(store, {"onnx-fp32/model.bin": big, "labels.json": small}, release_draft("digits")).version
        assert promote_if_unchanged(store, "digits", version, "test", versions[-1] if versions else None)[0]
        versions.append(version)
    list_versions(store, "digits")
    download_release(store, "digits", versions[1], tmp_path / "dl", tmp_path / "cache")
    roll_back(store, "digits", tmp_path / "work")
    return bucket, [r for r in s3_server.requests[start:] if f"/{bucket}" in r.path]


def test_documents_are_well_formed_and_accepted_by_an_s3_api(s3_endpoint: str) -> None:
    bucket = f"infra-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    for name in ("bucket-policy.json", "pipeline-role-policy.json"):
        policy = load(name, bucket)
        assert policy["Version"] == "2012-10-17"
        sids = [s["Sid"] for s in policy["Statement"]]
        assert len(sids) == len(set(sids)), name
        for statement in policy["Statement"]:
            assert statement["Effect"] in ("Allow", "Deny") and statement["Action"] and statement["Resource"], statement
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(load("bucket-policy.json", bucket)))
    assert json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"]) == load("bucket-policy.json", bucket)
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=load("lifecycle.json", bucket))
    rule = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]
    assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=load("bucket-encryption.json", bucket))
    default = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert default["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == KMS_KEY


def test_role_policy_is_least_privilege(s3_endpoint: str) -> None:
    policy = load("pipeline-role-policy.json", "bucket")
    actions = [a for s in policy["Statement"] for a in as_list(s["Action"])]
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    assert not [a for a in actions if "*" in a or "Delete" in a or a.startswith("s3:PutBucket")], actions
    for statement in policy["Statement"]:
        for resource in as_list(statement["Resource"]):
            assert resource in ("arn:aws:s3:::bucket", f"arn:aws:s3:::bucket/{PREFIX}/*", KMS_KEY), resource
    secure = {"aws:SecureTransport": "true"}
    assert decide(policy, "s3:GetObject", "arn:aws:s3:::bucket/other-team/x", secure) == "implicit"
    assert decide(policy, "s3:DeleteObject", f"arn:aws:s3:::bucket/{PREFIX}/models/x", secure) == "implicit"
    assert decide(policy, "s3:ListBucket", "arn:aws:s3:::bucket", {**secure, "s3:prefix": "other-team/"}) == "implicit"
    assert decide(policy, "kms:Decrypt", KMS_KEY, {"kms:ViaService": "ec2.eu-west-1.amazonaws.com"}) == "implicit"


def test_every_pipeline_request_is_allowed_by_the_role_and_the_bucket(pipeline_requests) -> None:
    bucket, requests = pipeline_requests
    role, guard = load("pipeline-role-policy.json", bucket), load("bucket-policy.json", bucket)
    seen = set()
    for request in requests:
        action, resource, context = iam_request(request, bucket)
        seen.add(action)
        assert decide(role, action, resource, context) == "allow", (request, action, resource, context)
        assert decide(guard, action, resource, context) != "deny", (request, action, resource, context)
    # The walk-through exercised listing, reading, single and multipart writes.
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject"} <= seen
    assert any("uploadId" in r.query for r in requests)
    assert "s3:DeleteObject" not in seen


def test_bucket_policy_refuses_plain_http_and_foreign_encryption() -> None:
    guard = load("bucket-policy.json", "bucket")
    key = f"arn:aws:s3:::bucket/{PREFIX}/models/x/manifest.json"
    secure = {"aws:SecureTransport": "true"}
    assert decide(guard, "s3:PutObject", key, {**secure, "s3:x-amz-server-side-encryption": "AES256"}) == "implicit"
    assert decide(guard, "s3:PutObject", key, {**secure, "s3:x-amz-server-side-encryption": "aws:kms"}) == "implicit"
    assert decide(guard, "s3:PutObject", key, {**secure, "s3:x-amz-server-side-encryption": "aws:fsx"}) == "deny"
    assert decide(guard, "s3:GetObject", key, {"aws:SecureTransport": "false"}) == "deny"
    assert decide(guard, "s3:ListBucket", "arn:aws:s3:::bucket", {"aws:SecureTransport": "false"}) == "deny"
    # A request without the header is not refused: S3 evaluates UploadPart as s3:PutObject and parts
    # never carry the header (botocore#471), so requiring it would break every multipart upload.
    assert decide(guard, "s3:PutObject", key, secure) == "implicit"


def test_bucket_default_encrypts_what_arrives_without_a_header(s3_endpoint: str) -> None:
    bucket = f"infra-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=load("bucket-encryption.json", bucket))
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/no-header.json", Body=b"{}")
    head = client.head_object(Bucket=bucket, Key=f"{PREFIX}/no-header.json")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KMS_KEY)

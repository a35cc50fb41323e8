"""Checks behind docs/SECURITY.md that a machine can repeat: secrets, storage at rest, wire contract, headers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from infra.cfn.stack import provision
from infra.messages import ImageRequest, output_key, safe_name
from tests.procs import ROOT

pytestmark = pytest.mark.reliability

# AWS access key ids, secret-looking assignments, private keys.
SECRET_PATTERNS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?(?!testing)[A-Za-z0-9/+]{30,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.splitlines() if not p.startswith("web_tier/static/vendor/")]


def test_no_credentials_in_tracked_files():
    hits = []
    for path in tracked_files():
        try:
            text = path.read_text(errors="ignore")
        except (IsADirectoryError, FileNotFoundError):
            continue
        hits += [f"{path.relative_to(ROOT)}: {m.group(0)[:20]}" for rx in SECRET_PATTERNS for m in rx.finditer(text)]
    assert hits == []


def test_buckets_private_encrypted_and_queues_encrypted(settings, clients):
    provision(settings, clients)
    s3, sqs = clients.s3, clients.sqs
    for bucket in (settings.in_bucket, settings.out_bucket):
        pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(pab.values()) and len(pab) == 4, pab
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    for name in settings.queue_names:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attrs.get("SqsManagedSseEnabled") == "true" or attrs.get("KmsMasterKeyId"), (name, attrs)


def test_request_messages_carry_no_image_bytes_and_fit_1_kb():
    longest = "n" * 196 + ".jpg"
    reply_to = "https://sqs.us-east-1.amazonaws.com/123456789012/" + "p" * 40 + "-reply-" + "r" * 32
    msg = ImageRequest.new(safe_name(longest), "v" * 64, longest, reply_to=reply_to, batch_id="b" * 64).to_json()
    assert len(msg.encode()) <= 1024
    # The reply queue's URL and the batch id (64 checked characters) are the only additions since the review:
    # still no user bytes beyond the checked name.
    assert set(ImageRequest.__dataclass_fields__) == {"request_id", "key", "version", "name", "sent_at", "reply_to",
                                                      "batch_id"}


@pytest.mark.parametrize("name", ["../x.jpg", "a/../../b.jpg", "/etc/passwd", "..", "x/..", "a\\b.jpg",
                                  "\x00.jpg", "..\u2215x.jpg"])
def test_output_keys_cannot_escape_their_prefix(name):
    try:
        key = output_key(name)
    except ValueError:
        return
    assert "/" not in key and "\\" not in key and ".." not in key and key.isascii()

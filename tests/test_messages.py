"""The wire contract: messages fit 1 KB, names become safe keys."""

import json
import unicodedata

import pytest

from infra.messages import (
    BadMessage,
    BadName,
    ImageRequest,
    ImageResult,
    check_reply_to,
    is_reply_queue_name,
    output_key,
    reply_queue_name,
    safe_name,
)


@pytest.mark.parametrize("raw, safe", [
    ("test_00.jpg", "test_00.jpg"),
    ("a<b>|c.png", "a_b__c.png"),
    ("  spaced .jpg ", "spaced .jpg"),
    ("x" * 196 + ".jpg", "x" * 196 + ".jpg"),
    ("café.jpg", "café.jpg"), ("照片.png", "照片.png"), ("Ünïcode.JPG", "Ünïcode.JPG"),
    ("cafe\u0301.jpg", "caf\u00e9.jpg"),  # NFD (as macOS names files) -> NFC
    ("हिन्दी.png", "हिन्दी.png"),  # combining marks are part of the word
    ("😀 smile.jpg", "_ smile.jpg"), ("a<b>|c.png", "a_b__c.png"),
])
def test_safe_name(raw, safe):
    assert safe_name(raw) == safe


@pytest.mark.parametrize("raw, why", [
    ("", "missing"), ("   ", "missing"), (None, "missing"),
    ("../../etc/passwd", "path"), ("C:\\Users\\cat.png", "path"), ("a/b.jpg", "path"), ("..", "path"),
    ("a\x00b.jpg", "control"), ("tab\there.jpg", "control"), ("rtl\u202egpj.exe", "control"),
    ("zero\u200bwidth.jpg", "control"), ("line\u2028sep.jpg", "control"), ("bom\ufeff.jpg", "control"),
    ("private\ue000.jpg", "control"), ("nonchar\uffff.jpg", "control"), ("lone\ud800.jpg", "control"),
    ("..\u2215..\u2215x.jpg", "path"), ("照片/x.png", "path"),
    ("x" * 201, "longer"), ("照" * 86 + ".png", "bytes"), ("___", "usable"),
])
def test_hostile_names_are_refused_with_a_reason(raw, why):
    with pytest.raises(BadName, match=why):
        safe_name(raw)


def test_output_key_is_stem():
    assert output_key("test_00.JPEG") == "test_00"
    assert output_key("archive.tar.gz") == "archive.tar"
    assert output_key(".hidden") == ".hidden"
    assert output_key("照片.png") == "照片" and output_key("cafe\u0301.jpg") == unicodedata.normalize("NFC", "café")


def test_unicode_request_fits_1_kb_in_utf8():
    longest = "照" * 81 + ".png"  # 247 UTF-8 bytes: the longest name safe_name lets through in this script
    req = ImageRequest.new(key=safe_name(longest), version="v" * 32, name=longest,
                           reply_to="https://sqs.us-east-1.amazonaws.com/123456789012/" + reply_queue_name(
                               "a" * 40, "0123456789ab"))
    body = req.to_json()
    assert len(body.encode()) <= 1024 and "照" in body  # UTF-8, not 6-byte escapes
    assert ImageRequest.from_json(body) == req


OWN = "https://sqs.us-east-1.amazonaws.com/111122223333/st-req-queue"


@pytest.mark.parametrize("reply_to, ok", [
    ("https://sqs.us-east-1.amazonaws.com/111122223333/st-resp-queue", True),
    ("https://sqs.us-east-1.amazonaws.com/111122223333/" + reply_queue_name("st", "0123456789ab"), True),
    ("https://sqs.us-east-1.amazonaws.com/999999999999/st-reply-0123456789ab", False),  # a foreign account
    ("https://sqs.eu-west-1.amazonaws.com/111122223333/st-reply-0123456789ab", False),  # another region
    ("https://evil.example/111122223333/st-reply-0123456789ab", False),
    ("https://sqs.us-east-1.amazonaws.com/111122223333/other-reply-0123456789ab", False),  # another stack
    ("https://sqs.us-east-1.amazonaws.com/111122223333/st-req-queue", False),  # not a reply queue
    ("https://sqs.us-east-1.amazonaws.com/111122223333/st-reply-0123456789ab/../x", False),
    ("https://sqs.us-east-1.amazonaws.com/111122223333/st-reply-0123456789AB", False),
    ("", False),
])
def test_worker_accepts_only_its_own_stacks_reply_queues(reply_to, ok):
    assert (check_reply_to(reply_to, OWN, "st", "st-resp-queue") is None) is ok


def test_reply_queue_names():
    assert is_reply_queue_name(reply_queue_name("st", "0123456789ab"), "st")
    assert not is_reply_queue_name("st-reply-0123456789ab", "s")
    assert not is_reply_queue_name("st-resp-queue", "st")
    with pytest.raises(ValueError):
        reply_queue_name("st", "../x")


def test_request_round_trip_and_size_limit():
    req = ImageRequest.new(key="k" * 200, version="v" * 100, name="n" * 200)
    body = req.to_json()
    assert len(body.encode()) <= 1024
    assert ImageRequest.from_json(body) == req
    with pytest.raises(ValueError, match="1 KB"):
        ImageRequest.new(key="k" * 900, version=None, name="n" * 200).to_json()


@pytest.mark.parametrize("body", ["not json", "[]", '{"v": 99}', '{"v": 1, "key": "x"}'])
def test_foreign_messages_are_rejected(body):
    with pytest.raises(BadMessage):
        ImageRequest.from_json(body)


def test_result_answer_format():
    ok = ImageResult(request_id="r1", name="test_07.jpg", label="tabby", score=0.9)
    assert ok.answer == "test_07:tabby"
    assert ImageResult.from_json(ok.to_json()) == ok
    bad = ImageResult(request_id="r2", name="x.jpg", error="not an image")
    assert not bad.ok and bad.answer == "x:error: not an image"
    with pytest.raises(BadMessage):
        ImageResult.from_json('{"v": 1, "name": "x"}')


def test_a_newer_schema_version_is_not_garbage():
    """A message from a newer tier (rolling upgrade) is UnknownVersion, carrying the ids it still has, so the
    worker leaves it for redelivery and marks its job, instead of dropping it as garbled."""
    from infra.messages import UnknownVersion

    body = json.dumps({"v": 2, "request_id": "abc123", "batch_id": "batch-0001", "name": "cat.jpg",
                       "image": {"bucket": "b", "key": "k"}})
    with pytest.raises(UnknownVersion) as err:
        ImageRequest.from_json(body)
    assert err.value.version == 2 and err.value.ids == {"request_id": "abc123", "batch_id": "batch-0001",
                                                        "name": "cat.jpg"}
    hostile = json.dumps({"v": 3, "request_id": "../../x", "name": "a" * 500})
    with pytest.raises(UnknownVersion) as err:
        ImageRequest.from_json(hostile)
    assert err.value.ids == {}  # nothing that does not look like our own ids is taken from it
    with pytest.raises(BadMessage) as err:
        ImageRequest.from_json(json.dumps({"request_id": "abc"}))  # no version at all: garbage
    assert not isinstance(err.value, UnknownVersion)

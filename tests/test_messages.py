"""The wire contract: messages fit 1 KB, names become safe keys."""

import pytest

from infra.messages import BadMessage, BadName, ImageRequest, ImageResult, output_key, safe_name


@pytest.mark.parametrize("raw, safe", [
    ("test_00.jpg", "test_00.jpg"),
    ("a<b>|c.png", "a_b__c.png"),
    ("  spaced .jpg ", "spaced .jpg"),
    ("x" * 196 + ".jpg", "x" * 196 + ".jpg"),
])
def test_safe_name(raw, safe):
    assert safe_name(raw) == safe


@pytest.mark.parametrize("raw, why", [
    ("", "missing"), ("   ", "missing"), (None, "missing"),
    ("../../etc/passwd", "path"), ("C:\\Users\\cat.png", "path"), ("a/b.jpg", "path"), ("..", "path"),
    ("caf\u00e9.jpg", "ASCII"), ("\u732b.png", "ASCII"),
    ("a\x00b.jpg", "control"), ("tab\there.jpg", "control"), ("rtl\u202egpj.exe", "control"),
    ("x" * 201, "longer"), ("___", "usable"),
])
def test_hostile_names_are_refused_with_a_reason(raw, why):
    with pytest.raises(BadName, match=why):
        safe_name(raw)


def test_output_key_is_stem():
    assert output_key("test_00.JPEG") == "test_00"
    assert output_key("archive.tar.gz") == "archive.tar"
    assert output_key(".hidden") == ".hidden"


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

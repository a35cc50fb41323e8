"""Pure parts of the workload generator: ground truth, answers, percentiles, arrivals, inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.images import write_images
from workload.generator import judge_answer, poisson_arrivals
from workload.inputs import normalize_url, plan_targets, scan_folder
from workload.model import Outcome, Target, WorkloadError
from workload.report import percentile
from workload.truth import image_stem, load_truth, parse_truth


def test_course_format_with_header_and_without_extensions():
    assert parse_truth("Image,Results\ntest_000,Paul\ntest_001,Emily\n") == {"test_000": "Paul", "test_001": "Emily"}


def test_headerless_course_format_with_extensions_and_blank_lines():
    text = "test_0.JPEG,bathtub\n\ntest_1.jpg,  electric ray \n"
    assert parse_truth(text) == {"test_0": "bathtub", "test_1": "electric ray"}


def test_imagenet_sample_labels_csv_uses_the_label_column():
    text = ("file,class_index,wnid,label\n"
            "n01440764_tench.JPEG,0,n01440764,tench\n"
            'n02111889_Samoyed.JPEG,258,n02111889,"Samoyed, Samoyede"\n')
    assert parse_truth(text) == {"n01440764_tench": "tench", "n02111889_Samoyed": "Samoyed, Samoyede"}


def test_bom_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes("\ufeffImage,Results\r\ntest_00,tench\r\n".encode())
    assert load_truth(path) == {"test_00": "tench"}


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("Image,Results\n", "no entries"),
    ("Image,Score\ntest_0,1\n", "no label column"),
    ("test_0\n", "expected 2 columns"),
    ("test_0,a,b\n", "expected 2 columns"),
    ("test_0,\n", "empty image name or label"),
    ("test_0,cat\ntest_0.jpg,dog\n", "listed twice"),
    ("test_0,cat\x00\n", "binary"),
])
def test_malformed_prediction_files_raise_one_line_errors(text, reason):
    with pytest.raises(WorkloadError, match=reason) as err:
        parse_truth(text, "p.csv")
    assert "\n" not in str(err.value)


def test_prediction_file_that_is_missing_or_not_text(tmp_path):
    with pytest.raises(WorkloadError, match="does not exist"):
        load_truth(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\xfa\x00\x01")
    with pytest.raises(WorkloadError, match="not UTF-8"):
        load_truth(tmp_path / "bin.csv")


def test_image_stem_strips_only_image_extensions():
    assert image_stem("test_00.JPEG") == "test_00"
    assert image_stem("dir/test_00.png") == "test_00"
    assert image_stem("test_00") == "test_00"
    assert image_stem("v1.2") == "v1.2"


TARGET = Target(0, Path("x/test_07.jpg"), "test_07.jpg", "test_07", "tench")


@pytest.mark.parametrize("code, body, outcome, label", [
    (200, "test_07:tench", Outcome.OK, "tench"),
    (200, "test_07:electric ray\n", Outcome.OK, "electric ray"),
    (200, '"test_07:tench"', Outcome.OK, "tench"),
    (200, "test_07.jpg:tench", Outcome.OK, "tench"),
    (200, "test_07:a:b", Outcome.OK, "a:b"),
    (200, "tench", Outcome.BAD_BODY, None),
    (200, "test_07:", Outcome.BAD_BODY, None),
    (200, "test_08:tench", Outcome.BAD_BODY, "tench"),
    (200, "test_07:error: model failed", Outcome.APP_ERROR, None),
    (503, "busy", Outcome.HTTP, None),
])
def test_judge_answer(code, body, outcome, label):
    got, got_label, _ = judge_answer(TARGET, code, body)
    assert (got, got_label) == (outcome, label)


def test_percentile_interpolates_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile([5.0], 99) == 5.0


def test_poisson_arrivals_are_seeded_and_average_the_rate():
    a = poisson_arrivals(2000, 50.0, seed=7)
    assert a == poisson_arrivals(2000, 50.0, seed=7)
    assert a != poisson_arrivals(2000, 50.0, seed=8)
    assert a[0] == 0.0 and all(x <= y for x, y in zip(a, a[1:], strict=False))
    assert 1800 / 50 < a[-1] < 2200 / 50  # mean gap 1/rate, within 10%


def test_plan_targets_cycles_only_with_repeat(tmp_path):
    images = write_images(tmp_path, 3)
    truth = {"test_00": "a", "test_01": "b", "test_02": "c"}
    targets = plan_targets(images, 7, True, truth)
    assert [t.name for t in targets] == ["test_00.jpg", "test_01.jpg", "test_02.jpg"] * 2 + ["test_00.jpg"]
    assert [t.expected for t in targets[:3]] == ["a", "b", "c"]
    assert len(plan_targets(images, None, False, None)) == 3
    with pytest.raises(WorkloadError, match="--repeat"):
        plan_targets(images, 4, False, None)


def test_scan_folder_skips_non_images_and_hidden_files(tmp_path):
    write_images(tmp_path, 2)
    (tmp_path / "labels.csv").write_text("a,b\n")
    (tmp_path / "fake.jpg").write_text("not a jpeg")
    (tmp_path / ".DS_Store").write_bytes(b"\x00")
    images, skipped = scan_folder(tmp_path)
    assert [p.name for p in images] == ["test_00.jpg", "test_01.jpg"]
    assert skipped == ["fake.jpg", "labels.csv"]


def test_normalize_url():
    assert normalize_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/"
    assert normalize_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/"
    assert normalize_url("127.0.0.1:8000") == "http://127.0.0.1:8000/"
    assert normalize_url("http://h/php_server.php") == "http://h/php_server.php"
    with pytest.raises(WorkloadError):
        normalize_url("ftp://h/")
    with pytest.raises(WorkloadError):
        normalize_url("http://h:99999/")


def test_monitor_watches_the_local_stack_when_the_url_is_local_and_no_endpoint_is_set(monkeypatch, tmp_path):
    from infra.config import LOCAL_ENDPOINT
    from workload.model import WorkloadConfig
    from workload.runner import _settings

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    local = _settings(WorkloadConfig(url="http://127.0.0.1:8000", image_folder=tmp_path, monitor=True))
    assert local.endpoint_url == LOCAL_ENDPOINT
    remote = _settings(WorkloadConfig(url="http://203.0.113.7:8000", image_folder=tmp_path, monitor=True))
    assert remote.endpoint_url is None  # a deployed stack is watched on real AWS
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4999")
    assert _settings(WorkloadConfig(url="http://localhost:8000", image_folder=tmp_path)).endpoint_url == \
        "http://127.0.0.1:4999"

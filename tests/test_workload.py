"""The load generator against a real HTTP server (the course-format stub on waitress) and as a CLI."""

from __future__ import annotations

import csv
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from tests.images import write_images
from tests.procs import ROOT
from tests.stub import Quirk, create_stub_app, serve_in_thread
from workload import WorkloadConfig, run_workload, summary_text
from workload.model import Outcome

N_IMAGES = 12
LABELS = {f"test_{i:02d}": f"class {i}" for i in range(N_IMAGES)}


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    write_images(folder, N_IMAGES)
    return folder


@pytest.fixture
def truth_file(tmp_path) -> Path:
    path = tmp_path / "truth.csv"
    path.write_text("Image,Results\n" + "".join(f"{stem},{label}\n" for stem, label in LABELS.items()))
    return path


@pytest.fixture
def stub():
    """A real server answering in the course format; quirks make some images fail in each way."""
    labels = dict(LABELS, test_01="not the right class")
    quirks = {
        "test_02": Quirk(status=500, body="internal error"),
        "test_03": Quirk(status=503, body="busy"),
        "test_04": Quirk(body="no colon here"),
        "test_05": Quirk(sleep_s=1.5),  # longer than the timeout used below
        "test_06": Quirk(status=400, body="bad image"),
    }
    app = create_stub_app(labels, quirks)
    with serve_in_thread(app) as url:
        yield url, app


def test_summary_counts_every_outcome_and_csv_has_every_request(stub, images, truth_file, tmp_path):
    url, app = stub
    csv_path = tmp_path / "out" / "requests.csv"
    result = run_workload(WorkloadConfig(url=url + "/", image_folder=images, prediction_file=truth_file,
                                         timeout_s=0.7, concurrency=4, csv_path=csv_path, progress=False))
    # 12 images: 00 and 07-11 right, 01 wrong, 02 500, 03 503, 04 garbled, 05 timeout, 06 400.
    assert (result.total, result.succeeded, result.failed) == (12, 7, 5)
    assert (result.correct, result.wrong) == (6, 1)
    text = summary_text(result)
    for line in ("Total number of requests: 12", "Total number of requests completed successfully: 7",
                 "Total number of failed requests: 5", "Total number of correct predictions : 6",
                 "Total number of wrong predictions: 1",
                 "Errors by kind: bad_body=1 http_400=1 http_500=1 http_503=1 timeout=1"):
        assert line in text.splitlines()
    assert f"Total response time: {result.wall_s:.2f}" in text
    assert result.wall_s >= 0.7  # the timed-out request waited its full timeout

    # Every request was uploaded as multipart field myfile with the image's bytes.
    sizes = {name: size for name, size in app.config["seen"]}
    assert sizes == {f"test_{i:02d}.jpg": (images / f"test_{i:02d}.jpg").stat().st_size for i in range(N_IMAGES)}

    rows = list(csv.DictReader(csv_path.open()))
    assert [r["name"] for r in rows] == [f"test_{i:02d}.jpg" for i in range(N_IMAGES)]
    by_name = {r["name"]: r for r in rows}
    assert (by_name["test_00.jpg"]["status"], by_name["test_00.jpg"]["label"],
            by_name["test_00.jpg"]["expected"], by_name["test_00.jpg"]["correct"]) == ("ok", "class 0", "class 0", "true")
    assert (by_name["test_01.jpg"]["label"], by_name["test_01.jpg"]["correct"]) == ("not the right class", "false")
    assert by_name["test_02.jpg"]["error_kind"] == "http_500" and by_name["test_02.jpg"]["http_status"] == "500"
    assert by_name["test_04.jpg"]["error_kind"] == "bad_body"
    assert by_name["test_05.jpg"]["error_kind"] == "timeout"
    assert float(by_name["test_05.jpg"]["latency_s"]) >= 0.7
    for r in rows:
        assert float(r["end_s"]) >= float(r["start_s"]) >= 0
        assert abs(float(r["latency_s"]) - (float(r["end_s"]) - float(r["start_s"]))) < 1e-3


def test_latency_percentiles_come_from_successful_requests(tmp_path, images):
    app = create_stub_app(LABELS, {"test_00": Quirk(sleep_s=0.4)}, delay_s=0.02)
    with serve_in_thread(app) as url:
        result = run_workload(WorkloadConfig(url=url, image_folder=images, concurrency=3, progress=False))
    assert result.failed == 0
    latency_line = next(line for line in summary_text(result).splitlines() if line.startswith("Latency"))
    figures = dict(zip(latency_line.split(":")[1].split()[::2], map(float, latency_line.split(":")[1].split()[1::2]),
                       strict=True))
    assert list(figures) == ["min", "p50", "p95", "p99", "max"]
    assert 0.02 <= figures["min"] <= figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]
    assert figures["max"] >= 0.4 > figures["p50"]
    assert "Correctness: not judged (no --prediction_file)" in summary_text(result)
    assert result.correct == result.wrong == 0


def test_poisson_mode_sends_exactly_num_request_spread_over_time(tmp_path, images):
    app = create_stub_app(LABELS)
    with serve_in_thread(app) as url:
        result = run_workload(WorkloadConfig(url=url, image_folder=images, num_request=30, repeat=True,
                                             rate=40.0, seed=3, progress=False))
    assert result.total == result.succeeded == 30
    assert len(app.config["seen"]) == 30
    scheduled = [r.scheduled_s for r in result.records]
    assert scheduled[0] == 0.0 and all(b >= a for a, b in zip(scheduled, scheduled[1:], strict=False))
    # Sent at (or just after) each arrival time, not all at once.
    for r in result.records:
        assert r.start_s >= r.scheduled_s - 0.01
    assert result.records[-1].start_s >= scheduled[-1] > 0.2


def test_repeat_cycles_through_the_folder(tmp_path, images):
    app = create_stub_app(LABELS)
    with serve_in_thread(app) as url:
        result = run_workload(WorkloadConfig(url=url, image_folder=images, num_request=30, repeat=True,
                                             concurrency=8, progress=False))
    assert result.succeeded == 30
    names = [name for name, _ in app.config["seen"]]
    assert sorted(set(names)) == [f"test_{i:02d}.jpg" for i in range(N_IMAGES)]
    assert names.count("test_00.jpg") == 3 and names.count("test_11.jpg") == 2


class _HangUpOnPost(socketserver.BaseRequestHandler):
    """Answers the up-front GET, then drops every POST without a word: a crashed web tier."""

    def handle(self):
        head = self.request.recv(65536)
        if head.startswith(b"GET"):
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def test_connection_errors_are_counted(images):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _HangUpOnPost)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = run_workload(WorkloadConfig(url=f"http://127.0.0.1:{server.server_address[1]}", image_folder=images,
                                             num_request=4, concurrency=2, progress=False, timeout_s=5))
    finally:
        server.shutdown()
        server.server_close()
    assert (result.total, result.failed) == (4, 4)
    assert all(r.status is Outcome.CONNECTION for r in result.records)
    assert "Errors by kind: connection=4" in summary_text(result).splitlines()
    assert "Latency (s, successful requests): n/a" in summary_text(result).splitlines()


def test_png_timeline_without_monitor_is_a_real_png(tmp_path, images):
    app = create_stub_app(LABELS, delay_s=0.05)
    png = tmp_path / "t.png"
    with serve_in_thread(app) as url:
        result = run_workload(WorkloadConfig(url=url, image_folder=images, monitor_png=png, progress=False))
    assert result.png_path == png
    with Image.open(png) as img:
        assert img.format == "PNG"
        assert img.size[0] >= 800 and img.size[1] >= 300
        assert len(img.getcolors(1 << 16) or range(1000)) > 5  # not a blank canvas


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workload", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_prints_the_course_summary_lines(stub, images, truth_file, tmp_path):
    url, _ = stub
    ok_folder = tmp_path / "ok"
    ok_folder.mkdir()
    for i in (0, 7, 8):
        (ok_folder / f"test_{i:02d}.jpg").write_bytes((images / f"test_{i:02d}.jpg").read_bytes())
    proc = run_cli("--num_request", "3", "--url", url, "--image_folder", str(ok_folder),
                   "--prediction_file", str(truth_file), "--csv", str(tmp_path / "r.csv"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "Total number of requests: 3" in lines
    assert "Total number of requests completed successfully: 3" in lines
    assert "Total number of failed requests: 0" in lines
    assert "Total number of correct predictions : 3" in lines
    assert "Total number of wrong predictions: 0" in lines
    assert any(line.startswith("Total response time: ") for line in lines)
    assert "Traceback" not in proc.stderr
    assert len(list(csv.reader((tmp_path / "r.csv").open()))) == 4


def test_cli_exits_1_when_requests_fail(stub, images, truth_file):
    url, _ = stub
    proc = run_cli("--url", url, "--image_folder", str(images), "--prediction_file", str(truth_file),
                   "--timeout", "0.7", "--quiet")
    assert proc.returncode == 1
    assert "Total number of failed requests: 5" in proc.stdout.splitlines()
    assert proc.stderr == ""  # --quiet: no progress bar, and nothing else to say


def _bad_inputs(tmp: Path, url: str, images: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "empty").mkdir()
    (tmp / "texts").mkdir()
    (tmp / "texts" / "a.txt").write_text("hello")
    (tmp / "bad.csv").write_text("test_00,a,b\n")
    base = ["--url", url, "--image_folder", str(images)]
    return {
        "unreachable url": (["--url", "http://127.0.0.1:9", "--image_folder", str(images)], "cannot reach"),
        "not a url": (["--url", "ftp://x", "--image_folder", str(images)], "not an http(s) URL"),
        "missing folder": (["--url", url, "--image_folder", str(tmp / "nope")], "does not exist"),
        "empty folder": (["--url", url, "--image_folder", str(tmp / "empty")], "has no images"),
        "only non-images": (["--url", url, "--image_folder", str(tmp / "texts")], "only non-image files"),
        "malformed prediction file": ([*base, "--prediction_file", str(tmp / "bad.csv")], "expected 2 columns"),
        "missing prediction file": ([*base, "--prediction_file", str(tmp / "none.csv")], "does not exist"),
        "too many without repeat": ([*base, "--num_request", "99"], "--repeat"),
        "zero requests": ([*base, "--num_request", "0"], "at least 1"),
        "negative rate": ([*base, "--rate", "-3"], "--rate"),
        "missing url": (["--image_folder", str(images)], "--url"),
        "csv into a folder": ([*base, "--csv", str(tmp)], "is a folder"),
    }


def test_cli_bad_input_gives_one_line_and_exit_2(stub, images, tmp_path):
    url, app = stub
    for case, (args, expected) in _bad_inputs(tmp_path, url, images).items():
        proc = run_cli(*args, "--quiet")
        assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, case
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, (case, proc.stderr)
        assert lines[0].startswith("workload: error: ") and expected in lines[0], (case, lines[0])
        assert proc.stdout == "", case
    assert app.config["seen"] == []  # bad input never sends a request


def test_non_image_files_are_skipped_with_a_warning(stub, images, truth_file, tmp_path):
    url, _ = stub
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "test_00.jpg").write_bytes((images / "test_00.jpg").read_bytes())
    (folder / "README.md").write_text("# not an image")
    proc = run_cli("--url", url, "--image_folder", str(folder), "--prediction_file", str(truth_file), "--quiet")
    assert proc.returncode == 0
    assert "Total number of requests: 1" in proc.stdout.splitlines()
    assert "skipping 1 non-image file(s)" in proc.stderr and "README.md" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_outcome_of_each_record_matches_its_error_kind(stub, images):
    url, _ = stub
    result = run_workload(WorkloadConfig(url=url, image_folder=images, timeout_s=0.7, progress=False))
    kinds = {r.name: (r.status, r.error_kind) for r in result.records}
    assert kinds["test_02.jpg"] == (Outcome.HTTP, "http_500")
    assert kinds["test_04.jpg"] == (Outcome.BAD_BODY, "bad_body")
    assert kinds["test_05.jpg"] == (Outcome.TIMEOUT, "timeout")
    assert kinds["test_00.jpg"] == (Outcome.OK, "")

"""The web tier scaled out: several `python -m web_tier` processes, one real `python -m app_tier` worker,
the moto server. Nothing lost or stolen between processes, any process reads any job, a killed process
loses no job and its reply queue is reaped, forged reply queues are refused, batches and their CSV,
Unicode names, and the page's batch link in headless Chromium."""

from __future__ import annotations

import csv
import io
import os
import signal
import threading
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from infra.cfn.stack import provision
from infra.clients import Clients
from infra.jobstore import JobStore
from infra.local.moto_server import free_port
from infra.messages import ImageRequest, reply_queue_name
from infra.observe import bucket_object_count, queue_depth, queue_url
from infra.provision import reply_queue_urls
from infra.tags import STACK_TAG
from tests.helpers import chrome, chromium_paths
from tests.images import jpeg_bytes, write_images
from tests.procs import log_text, running_web, start_module, stop_process, wait_for, web_settings

SEEDS = range(6)
INTERLEAVED = int(os.environ.get("IMGREC_SCALEOUT_REQUESTS", "120"))  # the bench sends 400


@pytest.fixture(scope="module")
def system(moto_server, tmp_path_factory):
    """Provisioned stack, one worker, web A (shared response queue) and web B (its own reply queue)."""
    tmp = tmp_path_factory.mktemp("scaleout")
    settings = web_settings(moto_server, tmp / "data", request_timeout_s=120.0, reply_heartbeat_s=1.0,
                            controller_lease_s=3.0)
    clients = Clients(settings)
    provision(settings, clients)
    worker = start_module("app_tier", settings, log_path=tmp / "worker.log", IMGREC_INSTANCE_ID="i-scale")
    b_settings = settings.replace(web_port=free_port())
    try:
        with running_web(settings, tmp / "web-a.log") as a, \
                running_web(b_settings, tmp / "web-b.log", IMGREC_REPLY_QUEUE="own") as b:
            a.name, b.name = "A", "B"
            yield _System(settings, clients, worker, a, b, tmp)
    finally:
        stop_process(worker)


class _System:
    def __init__(self, settings, clients, worker, a, b, tmp):
        self.settings, self.clients, self.worker, self.a, self.b, self.tmp = settings, clients, worker, a, b, tmp
        self.store = JobStore(clients.dynamodb, settings.jobs_table)

    def reply_name(self, web) -> str:
        return requests.get(web.base + "/healthz", timeout=10).json()["reply_queue"]


def post(base: str, name: str, data: bytes, timeout: float = 120) -> requests.Response:
    return requests.post(base + "/", files={"myfile": (name, data)}, timeout=timeout)


@pytest.fixture(scope="module")
def truth(system) -> dict[int, str]:
    labels = {}
    for seed in SEEDS:
        resp = post(system.a.base, f"truth_{seed}.jpg", jpeg_bytes(seed))
        assert resp.status_code == 200, (resp.text, log_text(system.worker)[-2000:])
        labels[seed] = resp.text.split(":", 1)[1]
    return labels


def test_each_process_has_its_own_reply_queue(system):
    assert system.reply_name(system.a) == system.settings.resp_queue  # the default process: graders' queue
    own = system.reply_name(system.b)
    assert own.startswith(f"{system.settings.prefix}-reply-")
    url = queue_url(system.clients.sqs, own)
    tags = system.clients.sqs.list_queue_tags(QueueUrl=url)["Tags"]
    assert tags[STACK_TAG] == system.settings.prefix and tags["imgrec:owner"] and tags["imgrec:heartbeat"]
    attrs = system.clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["SqsManagedSseEnabled"] == "true"


def test_two_processes_answer_interleaved_requests_nothing_lost_or_stolen(system, truth):
    def one(i: int):
        web = system.a if i % 2 == 0 else system.b
        seed = i % len(SEEDS)
        try:
            resp = post(web.base, f"il_{i:03d}.jpg", jpeg_bytes(seed))
        except requests.RequestException as err:
            return i, None, str(err), None
        return i, resp.status_code, resp.text, resp.headers.get("X-Job-Id")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(INTERLEAVED)))
    wrong = [r for r in results if r[1] != 200 or r[2] != f"il_{r[0]:03d}:{truth[r[0] % len(SEEDS)]}"]
    assert not wrong, wrong[:5]
    jobs = system.store.get_many([r[3] for r in results])
    assert len(jobs) == INTERLEAVED and all(j.status == "done" for j in jobs.values())
    sqs = system.clients.sqs
    for name in (system.settings.resp_queue, system.reply_name(system.b)):
        assert queue_depth(sqs, queue_url(sqs, name)).backlog == 0


def test_a_job_submitted_on_one_process_is_read_on_the_other(system, truth):
    files = [("images", (f"cross_{s}.jpg", jpeg_bytes(s))) for s in (0, 1, 2)]
    body = requests.post(system.a.base + "/api/jobs", files=files, timeout=30).json()
    ids = [j["id"] for j in body["jobs"]]
    assert requests.get(f"{system.b.base}/api/jobs/{ids[0]}", timeout=10).json()["status"] in ("queued", "done")

    def done_on_b():  # B's long poll re-reads the store for results A recorded
        got = requests.get(system.b.base + "/api/jobs", params={"ids": ",".join(ids), "wait": 10}, timeout=30).json()
        return got if all(j["status"] == "done" for j in got["jobs"]) else None

    got = wait_for(done_on_b, 90, interval=0.1, what="A's jobs done, read on B")
    assert [j["answer"] for j in got["jobs"]] == [f"cross_{s}:{truth[s]}" for s in (0, 1, 2)]
    # The batch index lags its table (AWS documents it): "finished" once the counters and the listing agree.
    batch = wait_for(lambda: (b := requests.get(system.b.base + body["batch"]["url"], timeout=10).json())["finished"]
                     and b, 15, interval=0.2, what="the batch finished, read on B")
    assert batch["counts"] == {"queued": 0, "done": 3, "failed": 0} and batch["total"] == batch["listed"] == 3
    resp = post(system.b.base, "cross_sync.jpg", jpeg_bytes(3))
    job = requests.get(f"{system.a.base}/api/jobs/{resp.headers['X-Job-Id']}", timeout=10).json()
    assert job["status"] == "done" and job["answer"] == resp.text == f"cross_sync:{truth[3]}"


def test_batch_api_csv_and_unicode_names(system, truth):
    nfd = unicodedata.normalize("NFD", "résumé.jpg")
    names = {"café.jpg": 0, "照片.png": 1, "Ünïcode.JPG": 2, nfd: 3}
    files = [("f", (name, jpeg_bytes(seed))) for name, seed in names.items()]
    files += [("f", ("notes.jpg", b"plain text, not an image")), ("f", ("gpj\u202e.exe", jpeg_bytes(4)))]
    resp = requests.post(system.b.base + "/api/jobs", files=files, timeout=60)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert [j["name"] for j in body["jobs"]] == list(names)  # answered back unchanged
    assert [(e["name"], e["status"]) for e in body["errors"]] == [("notes.jpg", 415), ("gpj\u202e.exe", 400)]
    batch_url = system.a.base + body["batch"]["url"]  # read on the other process

    def finished():
        got = requests.get(batch_url, timeout=10).json()
        return got if got["finished"] else None

    batch = wait_for(finished, 90, interval=0.3, what="batch finished")
    assert batch["total"] == 6 and batch["counts"] == {"queued": 0, "done": 4, "failed": 2}
    csv_resp = requests.get(system.b.base + body["batch"]["csv"], timeout=10)
    assert csv_resp.status_code == 200 and csv_resp.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in csv_resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(csv_resp.content.decode("utf-8"))))
    assert list(rows[0]) == ["name", "label", "score", "status", "error"]
    by_name = {r["name"]: r for r in rows}
    for name, seed in names.items():
        assert by_name[name]["label"] == truth[seed] and by_name[name]["status"] == "done"
        assert 0 < float(by_name[name]["score"]) <= 1 and by_name[name]["error"] == ""
    assert by_name["notes.jpg"]["status"] == "failed" and "not an image" in by_name["notes.jpg"]["error"]
    out = system.clients.s3
    assert out.get_object(Bucket=system.settings.out_bucket, Key="照片")["Body"].read().decode() == truth[1]
    assert out.get_object(Bucket=system.settings.out_bucket,
                          Key=unicodedata.normalize("NFC", "résumé"))["Body"].read().decode() == truth[3]
    for bad in ("nope0000", "no%20way"):
        assert requests.get(f"{system.a.base}/api/batches/{bad}", timeout=10).status_code == 404
    assert requests.get(f"{system.a.base}/api/batches/{uuid.uuid4().hex}.csv", timeout=10).status_code == 404


@pytest.mark.parametrize("name", ["café.jpg", "照片.png", "Ünïcode.JPG"])
def test_course_api_answers_unicode_names_unchanged(system, truth, name):
    resp = post(system.b.base, name, jpeg_bytes(5))
    assert resp.status_code == 200 and resp.text == f"{os.path.splitext(name)[0]}:{truth[5]}"


def test_forged_reply_queues_are_refused(system):
    """Requests naming another stack's queue or another account's are dropped by the worker, unanswered."""
    sqs, s3, s = system.clients.sqs, system.clients.s3, system.settings
    own_req = queue_url(sqs, s.req_queue)
    other_stack = sqs.create_queue(QueueName=reply_queue_name(f"x{uuid.uuid4().hex[:6]}", "0123456789ab"))["QueueUrl"]
    foreign = own_req.rsplit("/", 2)[0] + "/999999999999/" + reply_queue_name(s.prefix, "0123456789ab")
    mine = sqs.create_queue(QueueName=reply_queue_name(s.prefix, uuid.uuid4().hex[:12]),
                            tags={STACK_TAG: s.prefix})["QueueUrl"]
    sent = {}
    for tag, reply_to in (("forged_stack", other_stack), ("forged_account", foreign), ("control", mine)):
        put = s3.put_object(Bucket=s.in_bucket, Key=f"{tag}.jpg", Body=jpeg_bytes(1))
        req = ImageRequest.new(f"{tag}.jpg", put["VersionId"], f"{tag}.jpg", reply_to=reply_to)
        sqs.send_message(QueueUrl=own_req, MessageBody=req.to_json())
        sent[tag] = req.request_id
    wait_for(lambda: queue_depth(sqs, mine).visible == 1, 60, what="the control request answered")
    wait_for(lambda: queue_depth(sqs, own_req).backlog == 0, 30, what="forged requests deleted")
    assert queue_depth(sqs, other_stack).backlog == 0
    text = log_text(system.worker)
    assert "not one of stack" in text and "not in this stack's account" in text
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s.out_bucket).get("Contents", [])}
    assert "control" in keys and "forged_stack" not in keys and "forged_account" not in keys
    sqs.delete_queue(QueueUrl=mine)
    sqs.delete_queue(QueueUrl=other_stack)


def test_killing_a_web_process_loses_no_job_and_its_queue_is_reaped(system, truth, tmp_path):
    s = system.settings
    c_settings = s.replace(web_port=free_port())
    controller = start_module("controller", s.replace(min_instances=0, max_instances=1),
                              log_path=tmp_path / "controller.log")
    os.killpg(system.worker.pid, signal.SIGSTOP)  # the worker pauses: every request is mid-run at the kill
    stopped = True
    try:
        with running_web(c_settings, tmp_path / "web-c.log", IMGREC_REPLY_QUEUE="own") as c:
            reply = system.reply_name(c)
            body = requests.post(c.base + "/api/jobs", timeout=30, files=[
                ("f", (f"kill_api_{i}.jpg", jpeg_bytes(i % len(SEEDS)))) for i in range(8)]).json()
            outcomes = {}

            def sync(i):
                try:
                    outcomes[i] = post(c.base, f"kill_sync_{i}.jpg", jpeg_bytes(i % len(SEEDS))).status_code
                except requests.RequestException as err:
                    outcomes[i] = type(err).__name__

            threads = [threading.Thread(target=sync, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            req_url = queue_url(system.clients.sqs, s.req_queue)
            # total, not visible: a long poll the paused worker had open still takes messages in moto
            wait_for(lambda: queue_depth(system.clients.sqs, req_url).backlog == 14, 30,
                     what="8 + 6 requests sent")
            wait_for(lambda: requests.get(c.base + "/healthz", timeout=5).json()["waiting"] == 6, 30,
                     what="6 synchronous clients waiting")
            c.send_signal(signal.SIGKILL)
            c.wait(10)
            for t in threads:
                t.join(30)
        assert all(isinstance(o, str) for o in outcomes.values()) and len(outcomes) == 6, outcomes
        os.killpg(system.worker.pid, signal.SIGCONT)
        stopped = False
        batch_url = system.a.base + body["batch"]["url"]  # every job completes, read from another process
        batch = wait_for(lambda: (lambda b: b if b["finished"] else None)(requests.get(batch_url, timeout=10).json()),
                         120, interval=0.5, what="the killed process's batch recorded by the reaper")
        assert [j["answer"] for j in batch["jobs"]] == [f"kill_api_{i}:{truth[i % len(SEEDS)]}" for i in range(8)]
        sync_jobs = wait_for(lambda: _jobs_named(system, "kill_sync_", 6), 60, what="sync jobs recorded")
        assert sorted(j["answer"] for j in sync_jobs) == sorted(
            f"kill_sync_{i}:{truth[i % len(SEEDS)]}" for i in range(6))
        wait_for(lambda: reply not in [u.rpartition("/")[2] for u in reply_queue_urls(system.clients.sqs, s)], 60,
                 what="the dead process's reply queue reaped")
        assert "recorded" in log_text(controller) and "deleted" in log_text(controller)
        assert bucket_object_count(system.clients.s3, s.out_bucket) == len(
            {o["Key"] for o in system.clients.s3.list_objects_v2(Bucket=s.out_bucket)["Contents"]})
    finally:
        if stopped:
            os.killpg(system.worker.pid, signal.SIGCONT)
        stop_process(controller)


def _jobs_named(system, prefix: str, n: int):
    """Jobs whose name starts with ``prefix``, all done (a scan: the test's view of the table)."""
    items = system.clients.dynamodb.scan(TableName=system.settings.jobs_table, FilterExpression="begins_with(#n, :p)",
                                         ExpressionAttributeNames={"#n": "name"},
                                         ExpressionAttributeValues={":p": {"S": prefix}})["Items"]
    jobs = [j.to_dict() for j in system.store.get_many([i["id"]["S"] for i in items]).values()]
    return jobs if len(jobs) == n and all(j["status"] == "done" for j in jobs) else None


def test_clean_stop_deletes_its_own_reply_queue(system, tmp_path):
    d_settings = system.settings.replace(web_port=free_port())
    with running_web(d_settings, tmp_path / "web-d.log", IMGREC_REPLY_QUEUE="own") as d:
        name = system.reply_name(d)
        assert name in [u.rpartition("/")[2] for u in reply_queue_urls(system.clients.sqs, system.settings)]
        assert stop_process(d) == 0
    assert name not in [u.rpartition("/")[2] for u in reply_queue_urls(system.clients.sqs, system.settings)]
    assert "reply queue" in log_text(d) and "deleted" in log_text(d)


def test_two_processes_share_one_port(system, tmp_path):
    """SO_REUSEPORT: the kernel spreads new connections over both; each answers from its own queue."""
    port = free_port()
    e_settings = system.settings.replace(web_port=port, web_processes=2)
    with running_web(e_settings, tmp_path / "web-e1.log", IMGREC_REPLY_QUEUE="own"), \
            running_web(e_settings, tmp_path / "web-e2.log", IMGREC_REPLY_QUEUE="own"):
        seen = set()
        for _ in range(60):
            with requests.Session() as fresh:  # a new connection each time
                seen.add(fresh.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()["reply_queue"])
            if len(seen) == 2:
                break
        assert len(seen) == 2


# ---------------------------------------------------------------- the page in headless Chromium

@pytest.fixture
def browser(tmp_path):
    if not all(chromium_paths()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    with chrome(tmp_path) as driver:
        yield driver


def test_page_offers_the_csv_and_keeps_results_across_a_reload(system, truth, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    paths = write_images(tmp_path / "imgs", 3, prefix="page_")
    bad = tmp_path / "imgs" / "page_notes.jpg"
    bad.write_text("not an image")
    browser.get(system.a.base + "/")
    assert not browser.find_element(By.ID, "csv").is_displayed()
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in [*paths, bad]))

    def cards_finished(driver):
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .card")
        states = {c.get_attribute("data-name"): c.get_attribute("data-status") for c in cards}
        return states if len(states) == 4 and all(v in ("done", "failed", "error") for v in states.values()) else False

    states = WebDriverWait(browser, 120, poll_frequency=0.2).until(cards_finished)
    assert [states[p.name] for p in paths] == ["done"] * 3 and states["page_notes.jpg"] == "error"
    batch_id = browser.execute_script("return new URLSearchParams(location.search).get('batch')")
    assert batch_id and len(batch_id) == 32
    link = WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "csv") if d.find_element(
        By.ID, "csv").is_displayed() else False)
    assert link.text == "Download results (CSV)" and link.get_attribute("href").endswith(f"/api/batches/{batch_id}.csv")
    rows = list(csv.DictReader(io.StringIO(requests.get(link.get_attribute("href"), timeout=10).text)))
    assert sorted(r["name"] for r in rows) == sorted([p.name for p in paths] + ["page_notes.jpg"])

    for base in (system.a.base, system.b.base):  # a reload, then the same link on the other process
        browser.get(f"{base}/?batch={batch_id}")
        restored = WebDriverWait(browser, 30, poll_frequency=0.2).until(cards_finished)
        assert [restored[p.name] for p in paths] == ["done"] * 3 and restored["page_notes.jpg"] == "failed"
        labels = {c.get_attribute("data-name"): c.find_element(By.CSS_SELECTOR, ".label").text
                  for c in browser.find_elements(By.CSS_SELECTOR, "#results .card")}
        assert [labels[p.name] for p in paths] == [truth[i] for i in range(3)]
        assert browser.find_element(By.ID, "csv").is_displayed()

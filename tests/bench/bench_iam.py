"""What IAM enforcement costs the local moto: CPU and latency per call, enforcement off vs on.

One moto server, the local account (roles, admin) and the buckets and queues; the same
calls a worker makes per image (S3 get, S3 put, SQS send, receive, delete), signed with
the app role's credentials from the credential server, first with enforcement off, then
on. Prints medians; no assertions.

    .venv/bin/python -m tests.bench.bench_iam [--calls 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from infra.clients import Clients, make_client
from infra.config import Settings
from infra.local.account import prepare_account
from infra.local.credentials import CredentialServer
from infra.local.moto_iam import set_enforcement
from infra.local.moto_server import MotoServer, free_port
from infra.local.stack import provision_stack
from infra.observe import queue_url


def one_round(app: Clients, settings: Settings, req: str, resp: str) -> None:
    app.s3.get_object(Bucket=settings.in_bucket, Key="img")["Body"].read()
    app.s3.put_object(Bucket=settings.out_bucket, Key="img", Body=b"label")
    app.sqs.send_message(QueueUrl=resp, MessageBody="img:label")
    for m in app.sqs.receive_message(QueueUrl=req, MaxNumberOfMessages=1).get("Messages", []):
        app.sqs.delete_message(QueueUrl=req, ReceiptHandle=m["ReceiptHandle"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="rounds of 5 calls per mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, MotoServer(port=free_port()) as moto:
        settings = Settings.from_env({}, endpoint_url=moto.url, prefix="bench", data_dir=str(Path(tmp) / "data"),
                                     receive_wait_s=0)
        account, _ = prepare_account(settings)
        admin = Clients(settings, credentials=account.admin)
        settings, _ = provision_stack(settings, admin)  # the roles come from the stack's template
        admin.s3.put_object(Bucket=settings.in_bucket, Key="img", Body=b"x" * 60_000)
        req = queue_url(admin.sqs, settings.req_queue)
        moto_proc = psutil.Process(moto.proc.pid)
        with CredentialServer(settings, make_client("sts", settings, credentials=account.ec2_service)) as server:
            creds = server.credentials(account.app_role, "bench")
            app = Clients(settings, credentials={"aws_access_key_id": creds.access_key_id,
                                                 "aws_secret_access_key": creds.secret_access_key,
                                                 "aws_session_token": creds.session_token})
            resp = queue_url(app.sqs, settings.resp_queue)
            print(f"==== moto per call, {args.calls} rounds of 5 worker calls (S3 get/put, SQS send/receive/delete) ====")
            for on in (False, True, False, True):
                set_enforcement(moto.url, on)
                for _ in range(20):  # warm up
                    admin.sqs.send_message(QueueUrl=req, MessageBody="w")
                    one_round(app, settings, req, resp)
                rounds = []
                cpu0 = sum(moto_proc.cpu_times()[:2])
                for _ in range(args.calls):
                    admin.sqs.send_message(QueueUrl=req, MessageBody="w")
                    t0 = time.perf_counter()
                    one_round(app, settings, req, resp)
                    rounds.append((time.perf_counter() - t0) * 1000 / 5)
                # the admin's send is one more call per round
                cpu = (sum(moto_proc.cpu_times()[:2]) - cpu0) * 1000 / (args.calls * 6)
                print(f"IAM {'on ' if on else 'off'}  latency median {statistics.median(rounds):5.2f} ms, "
                      f"p95 {statistics.quantiles(rounds, n=20)[-1]:5.2f} ms; moto CPU {cpu:5.2f} ms per call")


if __name__ == "__main__":
    main()

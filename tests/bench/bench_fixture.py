"""What provisioning costs the suite per test, now that each test's resources come from the stack's template.

    python -m tests.bench.bench_fixture [--tests 40]

Prints, against a fresh moto server over HTTP (our launcher, as the suite uses): the ``stack`` fixture's data
part (buckets, queues, job table: one change set per test), the whole stack a few tests put up
(``provision_stack``: roles, launch templates, the web instance record, ...), and moto's one-off cost of
loading CloudFormation (the first stack of a session).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from infra.cfn.stack import provision
from infra.clients import Clients
from infra.config import Settings
from infra.local.moto_server import MotoServer, free_port
from infra.local.stack import provision_stack


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=40, help="per-test prefixes to provision")
    args = parser.parse_args()
    with MotoServer(port=free_port()) as moto:
        base = Settings(endpoint_url=moto.url, max_attempts=3)

        def fresh() -> Settings:
            prefix = f"t{uuid.uuid4().hex[:10]}"
            return base.replace(prefix=prefix, app_instance_prefix=f"{prefix}-app", web_instance_name=f"{prefix}-web")

        first = fresh()
        cold = timed(lambda: provision(first, Clients(first)))
        data = []
        for _ in range(args.tests):
            s = fresh()
            clients = Clients(s)
            data.append(timed(lambda s=s, c=clients: provision(s, c)))
        whole = []
        for _ in range(max(3, args.tests // 8)):
            s = fresh()
            clients = Clients(s)
            whole.append(timed(lambda s=s, c=clients: provision_stack(s, c)))
    print(f"first stack of a session (moto loads CloudFormation): {cold * 1000:.0f} ms")
    print(f"data part per test ({len(data)} tests): median {statistics.median(data) * 1000:.0f} ms, "
          f"max {max(data) * 1000:.0f} ms")
    print(f"whole stack per test ({len(whole)} tests): median {statistics.median(whole) * 1000:.0f} ms, "
          f"max {max(whole) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

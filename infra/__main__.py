"""`python -m infra provision | status | teardown | redrive | up | moto | deploy | destroy | bake | readme`."""

from __future__ import annotations

import argparse
import logging
import sys

from botocore.exceptions import BotoCoreError, ClientError

from infra.config import ConfigError, Settings, table_rows


def settings_table() -> list[tuple[str, str, str]]:
    """Rows of the README's configuration table: every process's settings, then the deploy-only ones, then the
    strict local AWS's (assembled here, in the command line that may import the deployer and the emulator, not in
    the runtime contract)."""
    from infra.deploy.settings import DEPLOY_ONLY_NOTE, DeploySettings
    from infra.local.strict.settings import NOTE as STRICT_NOTE
    from infra.local.strict.settings import StrictSettings

    return (table_rows(Settings) + table_rows(DeploySettings, note=DEPLOY_ONLY_NOTE)
            + table_rows(StrictSettings, note=STRICT_NOTE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("provision", help="create the stack's data part: buckets, queues, job table (idempotent)")
    sub.add_parser("status", help="print queue depths, bucket counts and instances")
    sub.add_parser("teardown", help="empty the stack's buckets and delete the stack (the data part provision made)")
    red = sub.add_parser("redrive", help="move dead-lettered requests back to the request queue (after an upgrade)")
    red.add_argument("--wait", type=float, default=45.0,
                     help="seconds to wait for dead-lettered requests the controller is looking at (default 45)")
    sub.add_parser("up", help="run the whole local stack (moto, provision, web tier, controller, workers)")
    dep = sub.add_parser("deploy", help="create the whole system on AWS (asks first; see docs/DEPLOY.md)")
    dep.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    dep.add_argument("--dry-run", action="store_true", help="print the plan and cost, change nothing")
    des = sub.add_parser("destroy", help="remove everything deploy and bake made (only resources tagged ours)")
    des.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    des.add_argument("--keep-images", action="store_true", help="keep AMIs made by bake")
    des.add_argument("--keep-data", action="store_true", help="keep the input and output buckets and their objects")
    bake = sub.add_parser("bake", help="build an app-tier AMI with the project and model installed")
    bake.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    readme = sub.add_parser("readme", help="print the README's configuration table (--write: update README.md)")
    readme.add_argument("--write", action="store_true")
    moto = sub.add_parser("moto", help="run a moto server in the foreground")
    moto.add_argument("--host", default="127.0.0.1")
    moto.add_argument("--port", type=int, default=4566)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "readme":
        from infra.config import markdown_table, write_readme_table

        if args.write:
            write_readme_table(settings_table())
        else:
            print(markdown_table(settings_table()))
        return 0
    if args.command == "moto":
        from infra.local.moto_server import serve_forever

        return serve_forever(args.host, args.port)
    if args.command == "up":
        from infra.local.stack import main as up

        return up()
    try:
        settings = Settings.from_env()
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return 2

    from infra.clients import Clients, local_aws_files
    from infra.config import LOCAL_ENDPOINT

    local = settings.replace(endpoint_url=LOCAL_ENDPOINT)
    if args.command in ("status", "redrive") and settings.endpoint_url is None and local_aws_files(local)[0].is_file():
        # `make run` is up here (its keys file exists only while it runs): read it, as the workload's --monitor does.
        print(f"AWS_ENDPOINT_URL is unset and a local stack is running: {args.command} on {LOCAL_ENDPOINT}",
              file=sys.stderr)
        settings = local
    clients = Clients(settings)
    if args.command in ("deploy", "destroy", "bake"):
        from infra.deploy.cli import run

        return run(args, settings, clients)
    try:
        if args.command == "provision":
            from infra.cfn.stack import provision

            print(provision(settings, clients))
        elif args.command == "teardown":
            from infra.cfn.stack import teardown

            print(teardown(settings, clients))
        elif args.command == "redrive":
            from infra.redrive import redrive, summary

            result = redrive(settings, clients.sqs, wait_s=args.wait)
            print(summary(result, settings))
            return 1 if result.failed or result.left_in_flight else 0
        elif args.command == "status":
            from infra.status import format_table, status_rows

            print(format_table(status_rows(settings, clients)))
    except (ClientError, BotoCoreError) as err:
        where = settings.endpoint_url or f"AWS {settings.region}"
        print(f"error talking to {where}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

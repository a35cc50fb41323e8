"""Command-line faces of deploy, destroy and bake: plan, confirmation, report, next steps."""

from __future__ import annotations

import sys

from botocore.exceptions import BotoCoreError, ClientError

from infra.config import Settings
from infra.deploy.dashboard import console_url
from infra.deploy.deploy import DeployError, NotConfirmed, confirm, deploy, destroy, plan_text

EXIT_NOT_CONFIRMED = 3


def run(args, settings: Settings, clients, *, stdin=None) -> int:
    try:
        if args.command == "deploy":
            print(plan_text(settings), flush=True)
            if args.dry_run:
                print("dry run: nothing was changed")
                return 0
            confirm("Create these resources?", yes=args.yes, stdin=stdin)
            report, url = deploy(settings, clients)
            print(report)
            print(f"\nweb tier:  {url}  (instances install and start in a few minutes)")
            print(f"dashboard: {console_url(settings)}")
            print(f"load test: python -m workload --url {url} --image_folder <folder> --num_request 100")
        elif args.command == "destroy":
            where = settings.endpoint_url or f"AWS region {settings.region}"
            print(f"Destroy stack {settings.prefix!r} in {where}: instances, launch template, roles, "
                  "security groups, dashboard, buckets (with their objects) and queues.", flush=True)
            confirm("Delete all of it?", yes=args.yes, stdin=stdin)
            print(destroy(settings, clients, keep_images=args.keep_images))
        elif args.command == "bake":
            from infra.deploy.bake import bake

            print(f"Bake: launch a {settings.instance_type} builder from {settings.ami_id}, install "
                  f"{settings.repo_url or '<IMGREC_REPO_URL unset>'}@{settings.repo_ref}, snapshot it, terminate it.",
                  flush=True)
            confirm("Build the image?", yes=args.yes, stdin=stdin)
            image_id, report = bake(settings, clients)
            print(report)
            print(f"\nexport IMGREC_AMI_ID={image_id}   # then: python -m infra deploy")
    except NotConfirmed as err:
        print(err, file=sys.stderr)
        return EXIT_NOT_CONFIRMED
    except DeployError as err:
        print(f"{args.command} failed: {err}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as err:
        where = settings.endpoint_url or f"AWS {settings.region}"
        print(f"error talking to {where}: {err}", file=sys.stderr)
        return 1
    return 0

"""Command-line faces of deploy, destroy and bake: plan, confirmation, report, next steps."""

from __future__ import annotations

import sys

from botocore.exceptions import BotoCoreError, ClientError

from infra.clients import make_client
from infra.config import ConfigError, Settings
from infra.deploy.compute import resolve_image
from infra.deploy.dashboard import console_url
from infra.deploy.deploy import confirm, deploy, destroy, plan_text
from infra.deploy.errors import DeployError, NotConfirmed
from infra.deploy.settings import DeploySettings

EXIT_NOT_CONFIRMED = 3
EXIT_BAD_CONFIG = 2


def run(args, settings: Settings, clients, *, stdin=None, env=None) -> int:
    """One deploy command; its own settings (``DeploySettings``) are read and checked only here."""
    try:
        dsettings = DeploySettings.from_env(env)
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        if args.command == "deploy":
            image = resolve_image(clients.ec2, make_client("ssm", settings), settings, dsettings)
            print(plan_text(settings, dsettings, image), flush=True)
            if args.dry_run:
                print("dry run: nothing was changed")
                return 0
            confirm("Create these resources?", yes=args.yes, stdin=stdin)
            report, url = deploy(settings, dsettings, clients)
            print(report)
            print(f"\nweb tier:  {url}  (instances install and start in a few minutes)")
            print(f"dashboard: {console_url(settings)}")
            print(f"load test: python -m workload --url {url} --image_folder <folder> --num_request 100")
        elif args.command == "destroy":
            where = settings.endpoint_url or f"AWS region {settings.region}"
            print(f"Destroy stack {settings.prefix!r} in {where}: instances, load balancer, launch template, roles, "
                  "security groups, dashboard, buckets (with their objects, the model's too) and queues.", flush=True)
            confirm("Delete all of it?", yes=args.yes, stdin=stdin)
            print(destroy(settings, clients, keep_images=args.keep_images))
        elif args.command == "bake":
            from infra.deploy.bake import bake

            print(f"Bake: launch a {settings.instance_type} builder from the base image, install "
                  f"{dsettings.repo_url or '<IMGREC_REPO_URL unset>'}@{dsettings.repo_ref}, snapshot it, "
                  "terminate it.", flush=True)
            confirm("Build the image?", yes=args.yes, stdin=stdin)
            image_id, report = bake(settings, dsettings, clients)
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

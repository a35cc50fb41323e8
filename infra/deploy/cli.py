"""Command-line faces of deploy, destroy and bake: plan, confirmation, report, next steps."""

from __future__ import annotations

import sys

from botocore.exceptions import BotoCoreError, ClientError

from infra.cfn.changes import StackFailed
from infra.config import ConfigError, Settings
from infra.deploy.deploy import confirm, deploy, destroy
from infra.deploy.errors import DeployError, NotConfirmed
from infra.deploy.settings import DeploySettings

EXIT_NOT_CONFIRMED = 3
EXIT_BAD_CONFIG = 2


def _deploy(args, settings: Settings, dsettings: DeploySettings, clients, stdin) -> None:
    def approve(text: str, plan) -> bool:
        print(text, flush=True)
        if args.dry_run:
            print("dry run: nothing was changed (the change set is deleted)")
            return False
        return plan.change_set_id is None or confirm("Execute this change set?", yes=args.yes, stdin=stdin)

    done = deploy(settings, dsettings, clients, approve=approve)
    if done is None:
        return
    if str(done.report):
        print(done.report)
    out = done.outputs
    print(f"\nweb tier:  {done.url}  (instances install and start in a few minutes)")
    print(f"dashboard: {out.get('DashboardUrl')}")
    print(f"buckets:   {out.get('InputBucketName')}, {out.get('OutputBucketName')}; model: {out.get('ModelBucketName')}")
    print(f"queues:    {out.get('RequestQueueUrl')}, {out.get('ResponseQueueUrl')}")
    print(f"app tier:  launch template {out.get('AppLaunchTemplateId')}")
    print(f"load test: python -m workload --url {done.url} --image_folder <folder> --num_request 100")


def run(args, settings: Settings, clients, *, stdin=None, env=None) -> int:
    """One deploy command; its own settings (``DeploySettings``) are read and checked only here."""
    try:
        dsettings = DeploySettings.from_env(env)
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        if args.command == "deploy":
            _deploy(args, settings, dsettings, clients, stdin)
        elif args.command == "destroy":
            where = settings.endpoint_url or f"AWS region {settings.region}"
            kept = "kept" if args.keep_data else "emptied and deleted"
            print(f"Destroy stack {settings.prefix!r} in {where}: stop the web instances, terminate the app "
                  f"instances the controller launched, delete the reply queues and the stack; the input and "
                  f"output buckets are {kept}" + ("" if args.keep_images else "; baked images deregistered") + ".",
                  flush=True)
            confirm("Delete all of it?", yes=args.yes, stdin=stdin)
            print(destroy(settings, clients, keep_data=args.keep_data, keep_images=args.keep_images))
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
    except (DeployError, StackFailed) as err:
        print(f"{args.command} failed: {err}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as err:
        where = settings.endpoint_url or f"AWS {settings.region}"
        print(f"error talking to {where}: {err}", file=sys.stderr)
        return 1
    return 0

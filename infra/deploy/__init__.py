"""Real-AWS deployment only: IAM, network, launch template, web instance, AMI bake, dashboard, pricing.

No tier imports this package; only `python -m infra deploy | destroy | bake` and its tests do."""

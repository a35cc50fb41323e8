"""Real-AWS deployment only: its settings and errors, the model artifact's upload, IAM, network,
load balancer, launch template, web instances, AMI bake, dashboard, pricing.

No tier imports this package; only `python -m infra deploy | destroy | bake` and its tests do. The
boot scripts instances run live in the runtime contract (`infra/userdata.py`), since the controller
launches with them too."""

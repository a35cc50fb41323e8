"""Real-AWS deployment only: its settings and errors, the deploy/destroy commands over the stack's change sets
(``infra/cfn/`` holds the template they deploy), a deployment made before the stack existed, images and the AMI
bake, pricing.

No tier imports this package; only `python -m infra deploy | destroy | bake` and its tests do. The boot scripts
instances run live in the runtime contract (``infra/userdata.py``), since the controller launches with them too.
"""

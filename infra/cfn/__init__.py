"""The system as one CloudFormation stack: its template, rendered from Python (``template.py``, with the
policies and the dashboard it carries), and the change-set plumbing (``changes.py``) that `python -m infra
deploy`, the local stack and the tests use to create, update and delete it. Neither a tier nor the local
emulation: the one definition of the stack's resources, read by both real AWS and moto."""

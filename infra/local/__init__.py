"""Local emulation only: moto launcher and fixes, the local stack, local instances, the inference gate.

No tier imports this package; it stands in for AWS on one machine."""

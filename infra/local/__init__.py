"""Local emulation only: moto launcher and fixes, the local stack, local instances (runner, init, isolation).

No tier imports this package; it stands in for AWS on one machine."""

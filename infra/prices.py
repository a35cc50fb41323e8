"""What instances cost: the one price table every part reads (deploy's estimate, the simulator's cost column).

Figures are Linux on-demand USD per hour in us-east-1 (public AWS price list, 2024); other
regions are usually 0-30 % dearer. They are estimates, not a bill.

Billing: "Amazon EC2 usage of Linux based instances that are launched in On-Demand, Reserved
and Spot form will be billed on one second increments, with a minimum of 60 seconds."
(https://aws.amazon.com/about-aws/whats-new/2017/10/announcing-amazon-ec2-per-second-billing/)
So an instance that lives 10 s costs as much as one that lives 60 s: the scaling policy counts
an instance's time as ``billed_seconds`` does.
"""

from __future__ import annotations

BILLING_MINIMUM_S = 60.0

USD_PER_HOUR: dict[str, float] = {
    "t3.micro": 0.0104,
    "t3.small": 0.0208,
    "t3.medium": 0.0416,
    "t3.large": 0.0832,
    "t3.xlarge": 0.1664,
    "t2.micro": 0.0116,
    "t2.small": 0.023,
    "t2.medium": 0.0464,
    "c5.large": 0.085,
    "c5.xlarge": 0.17,
    "c6i.large": 0.085,
    "c6i.xlarge": 0.17,
    "c7i.large": 0.08925,
    "m5.large": 0.096,
    "m6i.large": 0.096,
    "g4dn.xlarge": 0.526,
    "g5.xlarge": 1.006,
}


def billed_seconds(lifetime_s: float, minimum_s: float = BILLING_MINIMUM_S) -> float:
    """Seconds billed for one instance that ran ``lifetime_s``: per second, at least the minimum."""
    return max(minimum_s, max(0.0, lifetime_s))


def usd(instance_type: str, seconds: float) -> float | None:
    """What ``seconds`` of ``instance_type`` cost; None for a type not in the table."""
    price = USD_PER_HOUR.get(instance_type)
    return None if price is None else price * seconds / 3600

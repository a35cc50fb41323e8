"""A small on-demand price table, so `deploy` can say what max scale costs before it starts.

The per-hour figures are the runtime contract's table (``infra/prices.py``); this adds
EBS and the load balancer. An estimate for a confirmation prompt, not a bill.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.prices import USD_PER_HOUR  # the one price table (tests import it from here too)

HOURS_PER_MONTH = 730
EBS_GP3_USD_PER_GB_MONTH = 0.08
# Application Load Balancer: per hour plus per LCU-hour; a course-scale load stays near one LCU.
ALB_USD_PER_HOUR = 0.0225
ALB_USD_PER_LCU_HOUR = 0.008
ALB_LCUS = 1


@dataclass(frozen=True)
class Estimate:
    """Cost per hour at max scale; ``unknown`` lists instance types missing from the table."""

    usd_per_hour: float
    unknown: tuple[str, ...]

    def __str__(self) -> str:
        text = f"${self.usd_per_hour:.2f}/hour (~${self.usd_per_hour * HOURS_PER_MONTH:.0f}/month if left at max)"
        if self.unknown:
            text += f"; not in the price table, so not counted: {', '.join(self.unknown)}"
        return text


def ebs_usd_per_hour(gib: int) -> float:
    return gib * EBS_GP3_USD_PER_GB_MONTH / HOURS_PER_MONTH


def alb_usd_per_hour() -> float:
    return ALB_USD_PER_HOUR + ALB_LCUS * ALB_USD_PER_LCU_HOUR


def estimate_max_hourly(web_type: str, app_type: str, max_instances: int, root_volume_gb: int, *,
                        web_instances: int = 1, load_balancer: bool = False) -> Estimate:
    """``web_instances`` web instances plus ``max_instances`` app instances, each with its root
    volume, and the load balancer (at one LCU) when there is one."""
    total = (max_instances + web_instances) * ebs_usd_per_hour(root_volume_gb)
    if load_balancer:
        total += alb_usd_per_hour()
    unknown = []
    for itype, count in ((web_type, web_instances), (app_type, max_instances)):
        price = USD_PER_HOUR.get(itype)
        if price is None:
            unknown.append(itype)
        else:
            total += price * count
    return Estimate(round(total, 4), tuple(dict.fromkeys(unknown)))

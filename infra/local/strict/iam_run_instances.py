"""RunInstances authorised per resource, with ``ec2:LaunchTemplate``, and the CreateTags it implies.

AWS (Service Authorization Reference, Amazon EC2): RunInstances is authorised on each resource type it lists for
the action (image, instance, network-interface, security-group, subnet, volume, key-pair, launch-template, ...),
each with the request's condition keys, ``ec2:LaunchTemplate`` among them
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html). Tags on creation need the
tagging action too, in AWS's words for the same rule on Elastic Load Balancing: "If tags are specified in the
resource-creating action, additional authorization is required on the elasticloadbalancing:AddTags action ...
Therefore, users must also have explicit permissions to use the elasticloadbalancing:AddTags action. In the IAM
policy definition for the elasticloadbalancing:AddTags action, you can use the Condition element with the
elasticloadbalancing:CreateAction condition key to give tagging permissions to the action that creates the
resource." (https://docs.aws.amazon.com/elasticloadbalancing/latest/userguide/tagging-resources-during-creation.html);
for EC2 it is ``ec2:CreateTags`` with ``ec2:CreateAction``, as the deploy's web policy (``TagAtLaunch``) grants it.

moto checks RunInstances against Resource ``*`` only (``infra.local.moto_iam`` grants it when any Allow names the
action) and never asks for CreateTags. Here (``IMGREC_STRICT_IAM_RUN_INSTANCES``), with IAM enforced and the
condition emulation on, a RunInstances must also be allowed on each resource ARN it uses (instance/*, volume/*,
network-interface/*, the subnet, each security group named in the request or its template, the image, the
launch template), with ``ec2:LaunchTemplate`` and ``aws:RequestTag/<key>`` in the context, and ``ec2:CreateTags``
on each resource type it tags, with ``ec2:CreateAction`` = ``RunInstances``. Simplifications, stated: a launch
with no security group and no subnet is not checked against the VPC's defaults (AWS would).

On by default: the web role's policy comes from the stack's template, which names the launch template it makes
(``ec2:LaunchTemplate``), so the controller's launches pass exactly as on AWS and any other launch is denied.
"""

from __future__ import annotations

from infra.local.strict import context, iam_conditions
from infra.local.strict.control import StrictState

KEY = "iam_run_instances"
RUN_KEYS = frozenset({"ec2:launchtemplate", "ec2:createaction", "aws:requesttag/"})
ALWAYS = ("instance/*", "volume/*", "network-interface/*")


def _tag_specs(response, template) -> dict[str, dict[str, str]]:
    from moto.ec2.utils import convert_tag_spec

    tags = response._parse_tag_specification() or {}
    if template is not None:
        for kind, values in convert_tag_spec(template.data.get("TagSpecifications", [])).items():
            tags.setdefault(kind, {}).update(values)
    return tags


def resources(response, template, region: str, account: str, partition: str = "aws") -> list[str]:
    """The ARNs RunInstances is authorised on for this request."""
    def ec2(res: str) -> str:
        return f"arn:{partition}:ec2:{region}:{account}:{res}"

    data = template.data if template is not None else {}
    out = [ec2(r) for r in ALWAYS]
    image = response._get_param("ImageId") or data.get("ImageId")
    if image:
        out.append(f"arn:{partition}:ec2:{region}::image/{image}")
    subnet = response._get_param("SubnetId") or data.get("SubnetId")
    if subnet:
        out.append(ec2(f"subnet/{subnet}"))
    groups = list(response._get_param("SecurityGroupIds", []) or []) + list(data.get("SecurityGroupIds", []) or [])
    out += [ec2(f"security-group/{g}") for g in dict.fromkeys(groups)]
    if template is not None:
        out.append(ec2(f"launch-template/{template.template.id}"))
    return out


def apply(state: StrictState) -> None:
    from moto.iam import access_control as ac
    from moto.utilities.utils import get_partition

    check = ac.IAMRequestBase.check_action_permitted

    def check_action_permitted(self, resource: str) -> None:
        response = iam_conditions.current_response()
        on = (self._action == "ec2:RunInstances" and response is not None
              and context.enabled(state, KEY) and context.enabled(state, iam_conditions.KEY))
        if on:
            region, account = response.region, response.current_account
            partition = get_partition(region)
            template = iam_conditions.launch_template(response)
            tags = _tag_specs(response, template)
            ctx = {f"aws:RequestTag/{k}": [v] for values in tags.values() for k, v in values.items()}
            if template is not None:
                ctx["ec2:LaunchTemplate"] = [f"arn:{partition}:ec2:{region}:{account}:launch-template/"
                                             f"{template.template.id}"]
            iam_conditions._local.keys = RUN_KEYS
            try:
                for arn in resources(response, template, region, account, partition):
                    iam_conditions.check_as(self, "ec2:RunInstances", arn, ctx)
                for kind in tags:
                    iam_conditions.check_as(self, "ec2:CreateTags",
                                            f"arn:{partition}:ec2:{region}:{account}:{kind}/*",
                                            {**ctx, "ec2:CreateAction": ["RunInstances"]})
            finally:
                iam_conditions._local.keys = None
        check(self, resource)

    ac.IAMRequestBase.check_action_permitted = check_action_permitted

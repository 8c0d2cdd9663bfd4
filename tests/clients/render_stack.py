"""Renders what cross/aws/wsgate.yaml gives an instance, for every load balancer type and
every allowed idle timeout and drain time: the WSGATE_FLAGS line of /etc/wsgate/wsgate.env
and the unit's TimeoutStopSec, by evaluating the launch template's user data (Fn::Sub,
Fn::FindInMap, Fn::If, Ref) the way CloudFormation would. Offline: the template is read with
cfn-lint's own decoder, and no AWS call is made.

    python3 render_stack.py TEMPLATE     one JSON object per line, every value a string
"""
import itertools
import json
import re
import sys

from cfnlint.decode import decode


def main(path):
    template, matches = decode(path)
    if matches:
        sys.exit(f"cannot read {path}: {matches}")
    params = template["Parameters"]
    mappings = template["Mappings"]
    conditions = template["Conditions"]
    data = template["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    user_data = data["UserData"]["Fn::Base64"]["Fn::Sub"]

    def combos():
        optional = [
            {"RedisEndpoint": "", "TokenSecretParameter": "", "AllowedOrigins": ""},
            {
                "RedisEndpoint": "redis.example.internal:6379",
                "TokenSecretParameter": "/wsgate/jwt",
                "AllowedOrigins": "https://chat.example.com",
            },
        ]
        for lb, idle, drain, opt in itertools.product(
            params["LoadBalancerType"]["AllowedValues"],
            params["IdleTimeout"]["AllowedValues"],
            params["DrainTime"]["AllowedValues"],
            optional,
        ):
            values = {k: v.get("Default") for k, v in params.items()}
            values.update(
                LoadBalancerType=lb, IdleTimeout=str(idle), DrainTime=str(drain), **opt
            )
            yield values

    for values in combos():

        def cond(name):
            return ev(conditions[name])

        def ev(node):
            if isinstance(node, str):
                return node
            if isinstance(node, list):
                return [ev(n) for n in node]
            (fn, arg), = node.items()
            if fn == "Ref":
                return values[arg]
            if fn == "Fn::FindInMap":
                m, k1, k2 = (ev(a) for a in arg)
                return str(mappings[m][str(k1)][k2])
            if fn == "Fn::If":
                name, yes, no = arg
                return ev(yes) if cond(name) else ev(no)
            if fn == "Fn::Equals":
                a, b = (ev(x) for x in arg)
                return str(a) == str(b)
            if fn == "Fn::Not":
                return not ev(arg[0])
            if fn == "Condition":
                return cond(arg)
            if fn == "Fn::Sub":
                text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                local = {k: ev(v) for k, v in local.items()}
                return re.sub(
                    r"\$\{([A-Za-z0-9:]+)\}",
                    lambda m: str(local[m.group(1)] if m.group(1) in local else values[m.group(1)]),
                    text,
                )
            raise SystemExit(f"unsupported function {fn}")

        script = ev({"Fn::Sub": user_data})
        flags = re.search(r"^WSGATE_FLAGS=(.*)$", script, re.M).group(1)
        stop = int(re.search(r"^TimeoutStopSec=(\d+)$", script, re.M).group(1))
        print(
            json.dumps(
                {
                    "lb": values["LoadBalancerType"],
                    "idle_s": str(int(values["IdleTimeout"])),
                    "drain_s": str(int(values["DrainTime"])),
                    "flags": flags,
                    "timeout_stop_s": str(stop),
                },
                separators=(",", ":"),
            )
        )


main(sys.argv[1])

"""`factorconv plan`: the factor plan of an osep or igcv2 layer."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from .args import UsageError, count, number, parse_input_size


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plan", help="the factor plan of an osep or igcv2 layer: parts, cost, connectivity",
                       description="Print the plan an operator builds for one conv: its group convs (channels, "
                                   "kernels, groups), parameters and MACs against the dense conv, whether every "
                                   "output reaches every input (and by how many paths), and the receptive field.")
    p.add_argument("operator", choices=("osep", "igcv2"))
    p.add_argument("c_in", type=count(), help="input channels")
    p.add_argument("c_out", type=count(), nargs="?", default=None, help="output channels (default: c_in)")
    p.add_argument("--kernel", type=count(), default=3, help="kernel size (default 3)")
    p.add_argument("--hw", default=None, help="feature size HxW for MACs (default 32x32)")
    p.add_argument("--parts", default=2, type=lambda t: t if t == "auto" else count(2)(t),
                   help="osep: number of parts N, or auto (eq. 21; default 2)")
    p.add_argument("--gamma", type=number(), default=1.0, help="osep: overlap coefficient gamma (default 1)")
    p.add_argument("--policy", default="min", help="osep: internal channels policy (default min)")
    p.add_argument("--spatial", action="store_true", help="osep: split the kernel into KxH and 1xK parts (sosep)")
    p.add_argument("--L", type=count(2), default=None, help="igcv2: number of group convs (default: eq. 14)")
    p.add_argument("--K", type=count(2), default=None, help="igcv2: branch size of the 1x1 convs (IGCV2*)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _plan_osep(args: argparse.Namespace) -> tuple[dict[str, Any], torch.nn.Module]:
    from ..ops.osep import plan_osep

    plan = plan_osep(args.c_in, args.c_out or args.c_in, args.kernel, n_parts=args.parts, gamma=args.gamma,
                     policy=args.policy, spatial=args.spatial)
    op = _plan_layer(args, "sosep" if args.spatial else "osep", n_parts=args.parts, gamma=args.gamma,
                     policy=args.policy)
    return {**plan.to_dict(), "operator": "osep"}, op


def _plan_igcv2(args: argparse.Namespace) -> tuple[dict[str, Any], torch.nn.Module]:
    from ..ops.igcv import plan_igcv2

    channels = args.c_out or args.c_in
    kh, kw = (args.kernel, args.kernel)
    plan = plan_igcv2(channels, kh * kw, args.L, K=args.K, channelwise=True)
    if args.c_in != channels:
        raise UsageError("plan igcv2: the IGCV2 block keeps its width; give one channel count (or c_out = c_in)")
    op = _plan_layer(args, "igcv2", branch_sizes=list(plan.branch_sizes[1:]))
    return plan.to_dict((kh, kw)), op


def _plan_layer(args: argparse.Namespace, conv: str, **options: Any) -> torch.nn.Module:
    """The layer the plan builds (its chain gives connectivity and receptive field)."""
    from ..registry import create_conv2d

    return create_conv2d(args.c_in, args.c_out or args.c_in, args.kernel, conv=conv, padding=args.kernel // 2,
                         **options)


def run(args: argparse.Namespace) -> int:
    from ..ops.igcv import connectivity
    from ..ops.osep import volumetric_rf

    hw = parse_input_size(f"1x{args.hw}")[1:] if args.hw else (32, 32)
    plan, op = (_plan_osep if args.operator == "osep" else _plan_igcv2)(args)
    dense = args.c_in * (args.c_out or args.c_in) * args.kernel * args.kernel
    cost = op.cost(hw)
    links = connectivity([m for m in op.chain() if not isinstance(m, torch.nn.Identity)])
    rf = volumetric_rf([m for m in op.chain() if not isinstance(m, torch.nn.Identity)], args.kernel)
    plan.update(dense_params=dense, macs=cost.macs, dense_macs=dense * hw[0] * hw[1], input_hw=list(hw),
                connectivity={"dense": links.dense, "one_path": links.one_path, "density": links.density},
                receptive_field=list(rf.receptive_field), volumetric_rf_ok=rf.ok)
    if args.json:
        print(json.dumps(plan, indent=2))
        return 0
    head = f"{args.operator} plan for a {args.c_in}->{args.c_out or args.c_in} {args.kernel}x{args.kernel} conv"
    print(head)
    for i, part in enumerate(plan["parts"]):
        k = "x".join(map(str, part["kernel"]))
        extra = (f", {part['channels_per_group']} channels/group, padded {part['in_padded']}->{part['out_padded']}"
                 if "channels_per_group" in part else f", branch {part['branch']}")
        print(f"  part {i + 1}: {part['in']}->{part['out']} {k}, {part['groups']} groups{extra}")
    print(f"params         {plan['params']:,} ({plan['params'] / dense:.3f} of the dense conv's {dense:,})")
    print(f"MACs at {hw[0]}x{hw[1]}   {plan['macs']:,} ({plan['macs'] / plan['dense_macs']:.3f} of the dense conv's)")
    print(f"connectivity   {'dense' if links.dense else 'NOT dense'}"
          + (", exactly one path per input-output pair" if links.one_path else f", density {links.density:.3f}"))
    print(f"receptive field {rf.receptive_field[0]}x{rf.receptive_field[1]}; volumetric RF condition "
          f"{'holds' if rf.ok else 'does NOT hold'}")
    return 0

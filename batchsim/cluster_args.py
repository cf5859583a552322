"""`--replicas N --router NAME` and a repeatable `--profile` (simulate, sweep, plan)."""

from __future__ import annotations

import argparse

from batchsim.sim.cluster.router import ROUTERS
from batchsim.sim.cluster.spec import DEFAULT_ROUTER, ClusterSpec
from batchsim.sim.errors import UsageError


def add_cluster_options(p: argparse.ArgumentParser, profile_help: str | None) -> None:
    """profile_help None: the command keeps its own single --profile (sweep, plan)."""
    p.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="servers behind a router, each with its own policy, KV pool and cost "
                        "model (default 1: one server)")
    p.add_argument("--router", choices=tuple(ROUTERS), default=DEFAULT_ROUTER,
                   help="with --replicas > 1: which replica serves each arrival "
                        f"(default {DEFAULT_ROUTER}; docs/CLUSTER.md)")
    if profile_help is not None:
        p.add_argument("--profile", action="append", default=None, metavar="FILE",
                       help=profile_help + "; repeat it once per replica for a mixed fleet")


def cluster_from_args(args: argparse.Namespace) -> tuple[str | None, ClusterSpec | None]:
    """(the run's profile, its cluster) from the options; None: one server, as before."""
    profiles: list[str] = ([args.profile] if isinstance(args.profile, str)
                           else args.profile or [])
    if args.replicas == 1 and len(profiles) > 1:
        raise UsageError(f"--profile given {len(profiles)} times: a mixed fleet needs "
                         f"--replicas {len(profiles)}")
    if args.replicas == 1 and args.router != DEFAULT_ROUTER:
        raise UsageError(f"--router {args.router} routes between replicas: give --replicas N "
                         "(N > 1)")
    cluster = ClusterSpec(args.replicas, args.router,
                          tuple(profiles) if len(profiles) > 1 else ())
    return (profiles[0] if profiles else None), (cluster if cluster.replicas > 1 else None)

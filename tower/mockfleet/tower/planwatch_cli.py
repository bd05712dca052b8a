"""``mockfleet plan-watch``: the plan watcher on its own (a sidecar, or for tests).

A tower with ``--plan`` runs the same watcher inside its own loop; this
command is for towers that prefer a separate process next to them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError("the resync interval must be 0.05..3600 seconds")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plan",
        required=True,
        metavar="DIR",
        help="the mounted plan directory (lot.yaml and plan.json, kubelet projection or plain)",
    )
    p.add_argument("--root", required=True, metavar="ROOT", help="the tower's trigger root")
    p.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME", ""),
        metavar="NAME",
        help="this node's name in the plan (default: $NODE_NAME)",
    )
    p.add_argument(
        "--resync",
        type=_interval,
        default=10.0,
        metavar="SECONDS",
        help="full resync period, the repair of any missed change (default 10)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="sync once and exit (status 1 when the plan is unusable)",
    )


def run(args: argparse.Namespace) -> int:
    from mockfleet.tower.planwatch import PlanWatcher, serve

    if not args.node:
        print("mockfleet plan-watch: --node is required (or set NODE_NAME)", file=sys.stderr)
        return 2
    if not os.path.isdir(args.plan):
        print(f"mockfleet plan-watch: --plan {args.plan}: not a directory", file=sys.stderr)
        return 2
    try:
        watcher = PlanWatcher(args.plan, args.root, args.node, resync_interval=args.resync)
    except OSError as exc:
        print(f"mockfleet plan-watch: cannot use --root {args.root}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.once:
            return 1 if watcher.sync().error else 0
        return serve(watcher)
    finally:
        watcher.close()


def register(subparsers: Any) -> None:
    """Add ``mockfleet plan-watch`` to the console command."""
    p = subparsers.add_parser(
        "plan-watch",
        help="Turn a mounted plan into start/stop/upgrade triggers for this node.",
        description="Watch a plan directory (a ConfigMap volume) and keep the tower at --root "
        "running this node's devices. See docs/kubernetes-plan.md.",
    )
    add_arguments(p)
    p.set_defaults(handler=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mockfleet plan-watch")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

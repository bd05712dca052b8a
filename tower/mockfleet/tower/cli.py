"""``mockfleet tower``: supervise mocks driven by trigger files in a directory."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from mockfleet.tower import argtypes, priority

_RESTART_FLAGS = {
    "restart_policy": "policy",
    "restart_max": "maxRestarts",
    "restart_backoff": "backoff",
    "restart_max_backoff": "maxBackoff",
    "restart_reset_after": "resetAfter",
}


def add_tower_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="State and trigger directory (created 0700).")
    p.add_argument(
        "--max-start-rate",
        type=argtypes.positive,
        default=None,
        metavar="R",
        help="Start at most R mocks a second (default: unlimited); the rest wait in start/.",
    )
    p.add_argument(
        "--stop-grace",
        type=argtypes.duration,
        default=10.0,
        metavar="S",
        help="Time a mock has to stop before it is killed (default 10s).",
    )
    p.add_argument(
        "--http",
        type=argtypes.hostport,
        default=None,
        metavar="HOST:PORT",
        help="Serve /healthz, /status and /metrics (e.g. 127.0.0.1:9100).",
    )
    p.add_argument(
        "--run-as",
        default=None,
        metavar="USER",
        help="Run mocks as this user (the tower must run as root).",
    )
    p.add_argument(
        "--rlimit-as",
        type=argtypes.size,
        default=None,
        metavar="SIZE",
        help="Address-space limit per mock (e.g. 512MiB).",
    )
    p.add_argument(
        "--rlimit-nofile",
        type=argtypes.positive_int,
        default=None,
        metavar="N",
        help="Open-file limit per mock.",
    )
    p.add_argument(
        "--mock-oom-score-adj",
        type=argtypes.oom_score_adj_offset,
        default=None,
        metavar="N",
        help="Added to the tower's own oom_score_adj for every mock, capped at 1000, so that "
        "under memory pressure the kernel kills mocks (recorded, restarted per policy) before "
        "the tower (0-1000; default 500; 0 leaves the mocks as the tower is).",
    )
    p.add_argument(
        "--start-priority",
        choices=priority.MODES,
        default="auto",
        help="CPU priority of a mock while the tower starts others: idle, so that the tower "
        "and its zygote never wait behind the mocks they just started (each mock goes back "
        "to normal priority when the burst is over), or normal. auto (the default) is idle "
        "where the tower can bring mocks back (CAP_SYS_NICE, as root, or RLIMIT_NICE >= 15).",
    )
    p.add_argument(
        "--no-exit-keepers",
        dest="exit_keepers",
        action="store_false",
        help="Run mocks without their keepers (a second process per mock that shares its "
        "memory, so that the kernel reports a killed mock's exit before tearing that memory "
        "down: about 3x faster exit detection on a busy machine, for a process more per mock).",
    )
    p.add_argument(
        "--max-mocks",
        type=argtypes.positive_int,
        default=32768,
        metavar="N",
        help="Capacity: counter slots, so at most N mocks at once (default 32768).",
    )
    p.add_argument(
        "--restart-policy",
        choices=("Never", "OnFailure", "Always"),
        default=None,
        help="Override every lot's restart policy.",
    )
    p.add_argument(
        "--restart-max", type=int, default=None, metavar="N", help="Override maxRestarts."
    )
    p.add_argument(
        "--restart-backoff",
        type=argtypes.duration,
        default=None,
        metavar="S",
        help="Override the first restart delay.",
    )
    p.add_argument(
        "--restart-max-backoff",
        type=argtypes.duration,
        default=None,
        metavar="S",
        help="Override the longest restart delay.",
    )
    p.add_argument(
        "--restart-reset-after",
        type=argtypes.duration,
        default=None,
        metavar="S",
        help="Override how long a run must last to reset the backoff.",
    )
    p.add_argument(
        "--device",
        default=None,
        metavar="MODULE:FUNC",
        help="Device entry point (advanced/testing; default: the mockfleet device).",
    )
    p.add_argument("--events-stderr", action="store_true", help="Also print every event on stderr.")
    p.add_argument(
        "--plan",
        metavar="DIR",
        help="Kubernetes: a mounted plan ConfigMap (lot.yaml, plan.json) to turn into triggers "
        "for this node's share.",
    )
    p.add_argument(
        "--node",
        metavar="NAME",
        default=os.environ.get("NODE_NAME"),
        help="This node's name in the plan (default: $NODE_NAME).",
    )


def config_from_args(args: argparse.Namespace) -> Any:
    from mockfleet.tower.supervisor import (
        DEFAULT_DEVICE,
        DEFAULT_MOCK_OOM_SCORE_ADJ,
        TowerConfig,
    )

    if args.plan and not args.node:
        raise SystemExit("mockfleet tower: --plan needs --node NAME (or $NODE_NAME)")
    overrides = {
        key: getattr(args, flag)
        for flag, key in _RESTART_FLAGS.items()
        if getattr(args, flag) is not None
    }
    if args.run_as:
        if os.geteuid() != 0:
            raise SystemExit("mockfleet tower: --run-as needs the tower to run as root")
        import pwd

        try:
            pwd.getpwnam(args.run_as)
        except KeyError:
            raise SystemExit(f"mockfleet tower: --run-as: no such user {args.run_as!r}") from None
    if args.start_priority == "idle":
        try:
            priority.resolve("idle", priority.tower_can_restore(priority.MOCK_NICE))
        except priority.PriorityError as exc:
            raise SystemExit(f"mockfleet tower: {exc}") from None
    return TowerConfig(
        root=os.path.abspath(args.root),
        max_start_rate=args.max_start_rate,
        stop_grace=args.stop_grace,
        http=args.http,
        run_as=args.run_as,
        rlimit_as=args.rlimit_as,
        rlimit_nofile=args.rlimit_nofile,
        mock_oom_score_adj=(
            DEFAULT_MOCK_OOM_SCORE_ADJ
            if args.mock_oom_score_adj is None
            else args.mock_oom_score_adj
        ),
        device=args.device or DEFAULT_DEVICE,
        max_mocks=args.max_mocks,
        start_priority=args.start_priority,
        exit_keepers=args.exit_keepers,
        restart_overrides=overrides,
        events_stderr=args.events_stderr,
        plan=os.path.abspath(args.plan) if args.plan else None,
        node=args.node,
    )


def run(args: argparse.Namespace) -> int:
    from mockfleet.tower.supervisor import Tower

    cfg = config_from_args(args)
    try:
        from mockfleet.tower.triggers import ensure_dirs

        ensure_dirs(cfg.root)
    except OSError as exc:
        print(
            f"mockfleet tower: cannot use --root {cfg.root}: {exc.strerror or exc}", file=sys.stderr
        )
        return 2
    try:
        return Tower(cfg).run()
    except OSError as exc:
        if cfg.http and exc.filename is None:
            print(f"mockfleet tower: {exc}", file=sys.stderr)
            return 2
        raise


def register(subparsers: Any) -> None:
    """Add ``mockfleet tower`` to the console command."""
    p = subparsers.add_parser(
        "tower",
        help="Supervise mocks started and stopped by trigger files.",
        description="Run thousands of mocks on this machine, driven by trigger files in "
        "--root (start/<id>.json, stop/<id>, upgrade). See docs/triggers.md.",
    )
    add_tower_arguments(p)
    p.set_defaults(handler=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mockfleet tower")
    add_tower_arguments(parser)
    return run(parser.parse_args(argv))

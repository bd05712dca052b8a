"""``mockfleet crd`` and ``mockfleet operator`` subcommands."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operator's subcommands to the ``mockfleet`` parser."""
    crd = subparsers.add_parser(
        "crd",
        help="print the MockLot CustomResourceDefinition (YAML)",
        description="Print the MockLot CRD generated from the lot schema, "
        "e.g. `mockfleet crd | kubectl apply -f -`.",
    )
    crd.set_defaults(handler=_crd)

    op = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (kopf) for MockLot resources",
        description="Watch MockLots and run their towers as DaemonSets.",
    )
    scope = op.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; globs allowed)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch the whole cluster"
    )
    op.add_argument(
        "--liveness",
        metavar="URL",
        default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint (default: %(default)s; 'none' disables it)",
    )
    op.add_argument("--verbose", action="store_true", help="debug logging")
    op.set_defaults(handler=_operator)


def _crd(args: argparse.Namespace) -> int:
    from mockfleet.operator.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def _operator(args: argparse.Namespace) -> int:
    import logging

    import kopf

    import mockfleet.operator.handlers  # noqa: F401  (registers the handlers)

    if not args.namespace and not args.all_namespaces:
        print(
            "mockfleet operator: give --namespace NS (repeatable) or --all-namespaces",
            file=sys.stderr,
        )
        return 2
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    liveness = None if args.liveness == "none" else args.liveness
    kopf.run(
        standalone=True,  # one replica (Recreate): no peering objects needed
        clusterwide=bool(args.all_namespaces),
        namespaces=list(args.namespace),
        liveness_endpoint=liveness,
    )
    return 0

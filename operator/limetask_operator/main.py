"""`python -m limetask_operator` (or `limetask operator`): run the operator.

    python -m limetask_operator --all-namespaces
    python -m limetask_operator --namespace team-a --namespace team-b
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .settings import OperatorSettings, SettingsError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="limetask-operator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="a namespace (or glob pattern) to watch; repeat for several "
                            "(default: LIMETASK_NAMESPACES, comma-separated)")
    parser.add_argument("--liveness", default=os.environ.get("LIMETASK_LIVENESS", ""),
                        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kopf.objects", "kopf.activities.startup", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as exc:
        print(f"limetask-operator: invalid settings: {exc}", file=sys.stderr)
        return 2
    import kopf

    from . import tracing
    from .handlers import OperatorMemo

    namespaces = args.namespace or [n.strip() for n in os.environ.get("LIMETASK_NAMESPACES", "").split(",")
                                    if n.strip()]
    clusterwide = args.all_namespaces or not namespaces
    memo = OperatorMemo(settings=settings, namespaces=None if clusterwide else namespaces)
    tracing.configure()  # OpenTelemetry, when OTEL_* asks for it (tracing.py)
    try:
        asyncio.run(kopf.operator(
            clusterwide=clusterwide,
            namespaces=[] if clusterwide else namespaces,
            standalone=True,
            liveness_endpoint=args.liveness or None,
            memo=memo,
        ))
    except KeyboardInterrupt:
        pass
    finally:
        tracing.shutdown()
    return 0

"""
A program embedding L{ClusterService} in a process of its own, for the
real-process tests: C{python -m tests.integration.embedded NAME PORT SEED
CERTS [--no-client-certificate]}.

It joins C{SEED} over mutual TLS with the certificates of C{CERTS} (the
directory of L{cluster.daemon.certs}: C{ca.pem}, C{NAME.pem},
C{NAME-key.pem}; the server name C{cluster.test}), optionally presenting
no client certificate, and reports the outcome of
L{ClusterService.when_joined} on standard output (its log goes to
standard error), one line each:
C{joined} or C{JoinRefused: <message>} (or another error's name and
message), then C{ready: True} or C{ready: False}.  It then stops, with
exit status 0 when joined and 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import cast

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure

from cluster import ClusterService, Options
from cluster.alloy.discovery import static
from cluster.gossip import GossipConfig
from cluster.gossip.tls import load_stream_tls
from tests.unit.test_tls import KEY, NoClientCertificate

SERVER_NAME = "cluster.test"


async def run(args: argparse.Namespace, clock: IReactorTime) -> int:
    tls = load_stream_tls(
        os.path.join(args.certs, "ca.pem"),
        os.path.join(args.certs, f"{args.name}.pem"),
        os.path.join(args.certs, f"{args.name}-key.pem"),
        SERVER_NAME,
    )
    if args.no_client_certificate:
        tls = NoClientCertificate(tls.authority, tls.identity, tls.server_name)
    service = ClusterService(
        Options(
            enable_clustering=True,
            node_name=args.name,
            bind_address="127.0.0.1",
            bind_port=args.port,
            gossip=GossipConfig.local(keyring=KEY, tls=tls),
            discover_peers=static([args.seed]),
        ),
        reactor=clock,
    )
    service.startService()
    status = 0
    try:
        await service.when_joined()
        print("joined", flush=True)
    except Exception:
        failure = Failure()
        kind = type(failure.value).__name__
        print(f"{kind}: {failure.getErrorMessage()}", flush=True)
        status = 1
    print(f"ready: {service.data().ready()}", flush=True)
    await service.stopService()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.embedded")
    parser.add_argument("name")
    parser.add_argument("port", type=int)
    parser.add_argument("seed")
    parser.add_argument("certs")
    parser.add_argument("--no-client-certificate", action="store_true")
    args = parser.parse_args(argv)
    # The log on stderr; stdout keeps the report alone.
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    core = cast(IReactorCore, reactor)
    outcome: list[int] = []

    def done(result: int | Failure) -> None:
        outcome.append(result if isinstance(result, int) else 2)
        if isinstance(result, Failure):
            result.printTraceback(sys.stderr)
        core.stop()

    clock = cast(IReactorTime, reactor)
    core.callWhenRunning(lambda: ensureDeferred(run(args, clock)).addBoth(done))
    core.run()
    return outcome[0] if outcome else 2


if __name__ == "__main__":
    raise SystemExit(main())

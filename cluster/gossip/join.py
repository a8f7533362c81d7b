"""
Joining a cluster (memberlist's C{Join} and C{resolveAddr}): every seed is
resolved to its addresses, never blocking, and a push/pull with
C{Join=true} is tried with each of them.

A join that reaches nobody fails with L{JoinError}: nobody answered
(connection refused, no answer in time, a seed that does not resolve), as
for the first node of a new cluster.  When some address answered and
refused us it fails with L{JoinRefused} instead, naming each refusal and
its cause in words (L{refusal}): a TLS handshake either side refused, a
stream closed unanswered (another cluster name), a reply we cannot decrypt
or an error reply (another gossip key), an incompatible protocol version.
memberlist makes no such difference; its users, and Alloy, bootstrap a new
cluster on either, which for a refusal splits the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IResolver
from twisted.logger import Logger
from twisted.python.failure import Failure

from cluster.gossip.address import (
    Address,
    gather,
    join_host_port,
    parse_address,
    parse_ip,
    resolve_host,
)
from cluster.gossip.errors import JoinError, JoinRefused, NoReplyError, RemoteError
from cluster.gossip.framing import FrameError, gossip_key_words
from cluster.gossip.loops import StateSync
from cluster.gossip.state import ProtocolMismatchError
from cluster.gossip.tls import TLSRefused
from cluster.gossip.wire import WireError

__all__ = ["join", "refusal", "resolve_seed"]

_log = Logger()


async def resolve_seed(
    seed: str, default_port: int, resolver: Callable[[], IResolver]
) -> list[Address]:
    """
    The addresses of one seed: C{"host:port"}, C{"[v6]:port"} or a bare host
    (taking C{default_port}), optionally prefixed C{"name/"}; a host name is
    resolved (A and AAAA) through C{resolver()}, called only then.

    @raise ValueError: for a seed that is no address.
    """
    # memberlist accepts "name/host:port"; the name only matters to
    # transports that check it, and ours do not.
    _, _, text = seed.rpartition("/")
    host, port = parse_address(text, default_port)
    ip = parse_ip(host)
    if ip is not None:
        return [(ip, port)]
    return [(address, port) for address in await resolve_host(resolver(), host)]


def refusal(address: str, failure: Failure, label: str, tls: bool) -> str | None:
    """
    Why C{address} refused our join push/pull, in words, or C{None} when
    nobody answered there (see the module's docstring).

    @param failure: how the exchange failed.
    @param label: our cluster label (named when the peer closed unanswered).
    @param tls: whether our streams are TLS (when they are not, a peer that
        closes unanswered may be a TLS node).
    """
    error = failure.value
    if isinstance(error, TLSRefused):
        return str(error)
    if isinstance(error, NoReplyError):
        ours = f'ours is "{label}"' if label else "we have none"
        hint = f"a different cluster name? {ours}"
        if not tls:
            hint += "; or TLS on its side only?"
        return (
            f"{address} refused us: it closed the connection without answering "
            f"our push/pull ({hint})"
        )
    if isinstance(error, FrameError) and error.reason == "decrypt":
        why = gossip_key_words(str(error), "its reply", we_read=True)
        return f"{address} refused us: {why}"
    if isinstance(error, RemoteError):
        why = gossip_key_words(str(error), "our push/pull", we_read=False)
        return f"{address} refused us: {why}"
    if isinstance(error, ProtocolMismatchError):
        return f"{address} refused us: protocol version: {error}"
    if isinstance(error, WireError):
        # A reply that is no memberlist push/pull: not a node of ours.
        return f"{address} answered with no push/pull we can read: {error}"
    # Refused connections, no answer in time, no route (ConnectError,
    # OSError, StreamTimeout), a stream reset: nobody answered there.
    return None


async def join(
    seeds: Sequence[str],
    sync: StateSync,
    default_port: int,
    resolver: Callable[[], IResolver],
    log: Logger = _log,
) -> int:
    """
    Push/pull with C{Join=true} against every address of every seed (see
    L{resolve_seed}), all at once.

    @return: how many addresses answered.
    @raise JoinRefused: when there were seeds, none let us in, and at least
        one answered and refused us (see L{refusal}).
    @raise JoinError: when there were seeds and none answered, naming each
        seed that did not resolve and each address that did not answer.
    """
    errors: dict[str, Failure] = {}
    attempts: list[tuple[str, Deferred[None]]] = []
    resolved = await gather(
        [
            Deferred.fromCoroutine(resolve_seed(seed, default_port, resolver))
            for seed in seeds
        ]
    )
    for seed, result in zip(seeds, resolved, strict=True):
        if isinstance(result, Failure):
            errors[seed] = result
            log.warn(
                "failed to resolve {seed}: {error}",
                seed=seed,
                error=result.getErrorMessage(),
            )
            continue
        for address in result:
            label = join_host_port(*address)
            attempts.append((label, sync.exchange(address, join=True)))
    outcomes = await gather([d for _, d in attempts])
    contacted = 0
    refusals: dict[str, str] = {}
    config = sync.config
    for (label, _), outcome in zip(attempts, outcomes, strict=True):
        if not isinstance(outcome, Failure):
            contacted += 1
            continue
        errors[label] = outcome
        why = refusal(label, outcome, config.label, config.tls is not None)
        if why is None:
            log.debug(
                "failed to join {seed}: {error}",
                seed=label,
                error=outcome.getErrorMessage(),
            )
        else:
            refusals[label] = why
    if seeds and contacted == 0:
        if refusals:
            raise JoinRefused(errors, refusals)
        raise JoinError(errors)
    for label, why in refusals.items():
        # We joined through others: this one is said here, once (a TLS
        # refusal the transport said already), where a join refused
        # everywhere is said by whoever gets the JoinRefused.
        if not errors[label].check(TLSRefused):
            log.warn("failed to join {seed}: {error}", seed=label, error=why)
    return contacted

"""
Joining a cluster (memberlist's C{Join} and C{resolveAddr}): every seed is
resolved to its addresses, never blocking, and a push/pull with
C{Join=true} is tried with each of them.
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
from cluster.gossip.errors import JoinError
from cluster.gossip.loops import StateSync

__all__ = ["join", "resolve_seed"]

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


async def join(
    seeds: Sequence[str],
    sync: StateSync,
    default_port: int,
    resolver: Callable[[], IResolver],
) -> int:
    """
    Push/pull with C{Join=true} against every address of every seed (see
    L{resolve_seed}), all at once.

    @return: how many addresses answered.
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
            _log.warn(
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
    for (label, _), outcome in zip(attempts, outcomes, strict=True):
        if not isinstance(outcome, Failure):
            contacted += 1
            continue
        errors[label] = outcome
        _log.debug(
            "failed to join {seed}: {error}",
            seed=label,
            error=outcome.getErrorMessage(),
        )
    if seeds and contacted == 0:
        raise JoinError(errors)
    return contacted

"""
What the membership layer's public operations fail with.
"""

from __future__ import annotations

import errno

from twisted.python.failure import Failure

__all__ = [
    "BindError",
    "JoinError",
    "JoinRefused",
    "NoPingResponseError",
    "NoReplyError",
    "RemoteError",
    "cannot_listen",
]


class JoinError(Exception):
    """
    No seed could be contacted.  C{errors} maps each address to its failure.
    """

    def __init__(self, errors: dict[str, Failure]) -> None:
        detail = "; ".join(
            f"{address}: {failure.getErrorMessage()}"
            for address, failure in errors.items()
        )
        super().__init__(f"failed to join any seed: {detail}")
        self.errors = errors


class JoinRefused(JoinError):
    """
    No seed let us in, and at least one answered and refused us (TLS, a
    cluster name or gossip key of its own, a protocol version): a
    configuration to fix, not a cluster to found.  C{refusals} maps each
    address that refused to the cause in words; C{str()} gives them, one
    C{"address refused us: cause"} (or C{"we refused address: cause"},
    when it was its certificate we refused) after another.
    """

    def __init__(self, errors: dict[str, Failure], refusals: dict[str, str]) -> None:
        super().__init__(errors)
        self.args = ("; ".join(refusals.values()),)
        self.refusals = refusals


class NoReplyError(ConnectionError):
    """
    The peer closed a stream we dialled without answering our request: a
    memberlist node does so with a request of another cluster name
    (label), and a TLS node with plaintext.
    """


class RemoteError(Exception):
    """
    The peer answered a stream with an error message.
    """


class BindError(Exception):
    """
    The transport could not bind its address.  The message names the
    address and the cause (L{cannot_listen}).
    """


def cannot_listen(where: str, cause: object) -> str:
    """
    Why listening on C{where} failed, in words.

    @param where: the address, as the user wrote it or would.
    @param cause: the socket's error (C{CannotListenError.socketError}),
        usually an C{OSError}.
    """
    if isinstance(cause, OSError):
        if cause.errno == errno.EADDRINUSE:
            return f"{where} is in use"
        if cause.errno == errno.EACCES:
            return f"no permission to listen on {where}"
        if cause.errno == errno.EADDRNOTAVAIL:
            return f"{where} is not an address of this host"
        cause = (cause.strerror or str(cause)).lower()
    return f"cannot listen on {where}: {cause}"


class NoPingResponseError(Exception):
    """
    A ping (L{cluster.gossip.Memberlist.ping}) had no ack in time.
    """

    def __init__(self, name: str, address: str) -> None:
        super().__init__(f"no ping response from {name} at {address}")
        self.name = name
        self.address = address

"""
What the membership layer's public operations fail with.
"""

from __future__ import annotations

from twisted.python.failure import Failure

__all__ = ["BindError", "JoinError", "NoPingResponseError", "RemoteError"]


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


class RemoteError(Exception):
    """
    The peer answered a stream with an error message.
    """


class BindError(Exception):
    """
    The transport could not bind its address.  The message names the
    address and the cause.
    """


class NoPingResponseError(Exception):
    """
    A ping (L{cluster.gossip.Memberlist.ping}) had no ack in time.
    """

    def __init__(self, name: str, address: str) -> None:
        super().__init__(f"no ping response from {name} at {address}")
        self.name = name
        self.address = address

"""
How long an accepted stream takes to buffer and measure a large push/pull,
by size: the transport's incremental measure against re-measuring the whole
buffer at every chunk (what the transport did before: quadratic).

    python bench/stream_buffer.py [--chunk 65536] [--sizes 1,4,16]

Sizes are in MB of push/pull (node states plus user state); the stream is
fed in chunks of C{--chunk} bytes, as a socket delivers it.
"""

from __future__ import annotations

import argparse
import time

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from cluster.gossip.framing import StreamCodec
from cluster.gossip.transport import NetTransport, _ServerFactory
from cluster.gossip.wire import PushNodeState, PushPull, ip_to_bytes


class _Handler:
    def __init__(self) -> None:
        self.received = 0

    def packet_received(self, data: bytes, source: tuple[str, int]) -> None:
        pass

    def stream_measure(self) -> object:
        return StreamCodec().measure(accepted=True)

    def stream_received(self, data: bytes, source: tuple[str, int]) -> object:
        from twisted.internet.defer import succeed

        self.received = len(data)
        return succeed(None)


def frame_of(megabytes: float) -> bytes:
    """
    A plain push/pull of about C{megabytes}: half node states, half user
    state (the user state is a raw tail, the node states must be walked).
    """
    target = int(megabytes * 1_000_000)
    address = ip_to_bytes("10.1.2.3")
    state = PushNodeState("node-000000", address, 7946, b"m" * 40, 1, 0, bytes(6))
    per_node = len(
        StreamCodec(compression=False).encode(PushPull(False, (state,)), True)
    )
    count = max(1, target // 2 // per_node)
    nodes = tuple(
        PushNodeState(f"node-{i:06d}", address, 7946, b"m" * 40, i, 0, bytes(6))
        for i in range(count)
    )
    message = PushPull(False, nodes, b"u" * (target // 2))
    return StreamCodec(compression=False).encode(message, dialler=True)


def incremental(frame: bytes, chunk: int) -> float:
    transport = NetTransport(Clock(), "127.0.0.1", 0, stream_timeout=1e9)
    handler = _Handler()
    transport.handler = handler  # type: ignore[assignment]
    stream = _ServerFactory(transport).buildProtocol(None)
    stream.makeConnection(StringTransport())
    started = time.perf_counter()
    for start in range(0, len(frame), chunk):
        stream.dataReceived(frame[start : start + chunk])
    elapsed = time.perf_counter() - started
    assert handler.received == len(frame)
    return elapsed


def remeasured(frame: bytes, chunk: int, budget: float) -> float | None:
    """
    The old way: append to one buffer and measure all of it per chunk.
    C{None} when it takes longer than C{budget} seconds.
    """
    codec = StreamCodec()
    buffer = b""
    started = time.perf_counter()
    for start in range(0, len(frame), chunk):
        buffer += frame[start : start + chunk]
        if codec.frame_length(buffer, accepted=True) is not None:
            break
        if time.perf_counter() - started > budget:
            return None
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--sizes", default="1,4,16")
    parser.add_argument("--budget", type=float, default=60.0)
    args = parser.parse_args(argv)
    sizes = [float(size) for size in args.sizes.split(",")]
    print(f"chunks of {args.chunk} bytes")
    columns = ("MB", 6), ("incremental s", 14), ("ms/MB", 7), ("re-measured s", 14)
    print(" ".join(f"{name:>{width}}" for name, width in columns), f"{'ms/MB':>7}")
    for size in sizes:
        frame = frame_of(size)
        megabytes = len(frame) / 1e6
        new = incremental(frame, args.chunk)
        old = remeasured(frame, args.chunk, args.budget)
        old_text = (
            f"{old:>14.3f} {1000 * old / megabytes:>7.1f}"
            if old is not None
            else f"{'>' + str(args.budget):>14} {'':>7}"
        )
        print(
            f"{megabytes:>6.1f} {new:>14.3f} {1000 * new / megabytes:>7.1f} {old_text}"
        )


if __name__ == "__main__":
    main()

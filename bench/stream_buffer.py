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
import os
import sys
import time
from collections.abc import Sequence

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

# Running the script directly puts bench/ (not the repo root) on sys.path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _harness as harness
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


def sizes(text: str) -> list[float]:
    """
    An argument type: sizes in MB, comma-separated.
    """
    try:
        values = [float(size) for size in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not numbers of MB: {text!r}") from None
    if not all(value > 0 for value in values):
        raise argparse.ArgumentTypeError("each above 0 MB")
    return values


TABLE = harness.Table(
    [
        harness.Column("MB", 6),
        harness.Column("incremental s", 14),
        harness.Column("ms/MB", 7),
        harness.Column("re-measured s", 14),
        harness.Column("ms/MB", 7),
    ],
    separator=" ",
)


def main(argv: Sequence[str] | None = None) -> None:
    options = harness.parser(__file__, __doc__)
    options.add_argument("--chunk", type=harness.at_least(1), default=65536)
    options.add_argument("--sizes", type=sizes, default=[1.0, 4.0, 16.0])
    options.add_argument("--budget", type=harness.seconds, default=60.0)
    args = options.parse_args(argv)
    print(f"chunks of {args.chunk} bytes")
    print(TABLE.header())
    rows = []
    for size in args.sizes:
        frame = frame_of(size)
        megabytes = len(frame) / 1e6
        new = incremental(frame, args.chunk)
        old = remeasured(frame, args.chunk, args.budget)
        rows.append({"mb": megabytes, "incremental_s": new, "remeasured_s": old})
        print(
            TABLE.line(
                [
                    f"{megabytes:.1f}",
                    f"{new:.3f}",
                    f"{1000 * new / megabytes:.1f}",
                    f">{args.budget}" if old is None else f"{old:.3f}",
                    "" if old is None else f"{1000 * old / megabytes:.1f}",
                ]
            )
        )
    harness.write_json(args.json, {"chunk": args.chunk, "rows": rows})


if __name__ == "__main__":
    main()

"""
C{examples/asyncio_embed.py} run as a user runs it, in its own process
(it installs Twisted's asyncio reactor, which is global): three nodes on
loopback under C{asyncio.run}, ready, asked for owners, stopped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from cluster.alloy.service import TOKENS_PER_NODE
from cluster.gossip import GossipConfig
from cluster.peer import Peer, PeerState
from cluster.shard import Op, ring, string_key
from tests.processes import STARTUP

CHECKOUT = Path(__file__).resolve().parents[2]
EXAMPLE = CHECKOUT / "examples" / "asyncio_embed.py"
LOCAL = GossipConfig.local()
NAMES = ("a", "b", "c")
KEYS = ("job-1", "job-2", "job-3", "job-4", "job-5")


def expected_owner(key: str) -> str:
    """
    The owner of C{key} on a ring of the three participants: the names
    alone decide it.
    """
    sharder = ring(TOKENS_PER_NODE)
    sharder.set_peers(
        [
            Peer(name, f"127.0.0.1:{port}", False, PeerState.PARTICIPANT)
            for port, name in enumerate(NAMES, start=7001)
        ]
    )
    return sharder.lookup(string_key(key), 1, Op.READ_WRITE)[0].name


class AsyncioExampleTests(TestCase):
    # Importing Twisted cold, then joins, readiness (components hear of a
    # change at most once a second) and three graceful stops on loopback.
    timeout = STARTUP + 3 * (LOCAL.tcp_timeout + 5.0) + 30

    async def test_runs_and_agrees_on_owners(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(CHECKOUT), *filter(None, [env.get("PYTHONPATH")])]
        )
        run: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
            sys.executable, [str(EXAMPLE)], env=env, path=str(CHECKOUT), reactor=reactor
        )
        out, err, status = await run
        output = out.decode("utf-8")
        self.assertEqual((status, err.decode("utf-8")), (0, ""), output)
        lines = output.splitlines()
        expected = [
            "joined: a, b, c",
            "ready: 3 participants (a, b, c)",
            *(
                f"{key}: "
                + ", ".join(f"{name} says {expected_owner(key)}" for name in NAMES)
                for key in KEYS
            ),
            "stopped",
        ]
        self.assertEqual(lines, expected)
        # docs/embedding.md shows this output.
        embedding = (CHECKOUT / "docs" / "embedding.md").read_text()
        self.assertIn("```text\n" + output + "```", embedding)

"""
The mistakes of starting a node, each made with the real command
(C{clusternode}, here C{python -m cluster.daemon} from this checkout): the
exit status, and on stderr exactly one line naming the flag and the cause
in words, nothing else; no traceback anywhere, and no part of a key.

Status 2 is a command line that cannot serve (a value, or a file a flag
names), found before anything binds; status 1 a node that could not start.
The same lines are checked in-process, cause by cause, in
C{tests/unit/test_tap.py}; these prove the wiring of a real process.
"""

from __future__ import annotations

import os
import re
import socket

from twisted.internet import reactor

from cluster.daemon.certs import issue_certificate, make_authority
from cluster.daemon.demo import LocalNode
from cluster.gossip.address import DNS_TIMEOUT
from tests.helpers import tls_flags, wait_for
from tests.processes import STARTUP, ProcessTestCase

KEY16 = "AAECAwQFBgcICQoLDA0ODw=="
# A 32-byte key with its last character lost: no longer base64.
MISTYPED_KEY = "z8jpRNqKf0SDuWKyOmBvT7g+Wc9hZlnR5YQ3mXLe2Lg"
NOT_BASE64 = (
    "not a base64 key (16, 24 or 32 bytes in standard base64, as serf keygen prints)"
)
# What a DNS server may answer for a name that does not exist
# (cluster.gossip.address words each lookup failure).
DNS_WORDS = (
    "no such name",
    "the DNS server failed",
    "the DNS server refused the query",
    "no DNS answer in time",
)
# A/AAAA, then SRV: each query retried on DNS_TIMEOUT.
RESOLVING = 2 * sum(DNS_TIMEOUT)


class MistakeTests(ProcessTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    async def ended(
        self, node: LocalNode, bound: float = STARTUP
    ) -> tuple[int, str, str]:
        """
        Start C{node}, wait (up to C{bound}) until it ends.

        @return: its exit status, its stdout (the log) and its stderr.
        """
        self.spawn(node)
        await wait_for(lambda: node.ended.called, bound, f"{node.name} ends")
        status = await node.ended
        self.assertNotIn("Traceback", node.output)
        log = node.output.replace(node.errors, "", 1)
        return status, log, node.errors

    async def assertMistake(
        self, status: int, line: str, *args: str, bound: float = STARTUP
    ) -> str:
        """
        A node started with C{args} ends with C{status}, C{line} alone on
        stderr, and no part of L{MISTYPED_KEY} anywhere.

        @return: its log.
        """
        node = LocalNode(reactor, "n", args)
        ended, log, errors = await self.ended(node, bound)
        self.assertEqual((ended, errors), (status, f"clusternode: {line}\n"), log)
        for start in range(len(MISTYPED_KEY) - 5):
            self.assertNotIn(MISTYPED_KEY[start : start + 6], node.output)
        return log

    def held(self, port: int, udp: bool = False) -> None:
        """
        Hold C{port} on 127.0.0.1 (TCP, and UDP too if C{udp}) for the test.
        """
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", port))
        tcp.listen()
        self.addCleanup(tcp.close)
        if udp:
            datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            datagrams.bind(("127.0.0.1", port))
            self.addCleanup(datagrams.close)

    # --- the node could not start: status 1 ---

    async def test_http_port_in_use(self) -> None:
        node = LocalNode(reactor, "h")
        self.held(node.http_port)
        status, log, errors = await self.ended(node)
        line = f"--http: 127.0.0.1:{node.http_port} is in use"
        self.assertEqual((status, errors), (1, f"clusternode: {line}\n"))
        # Said once in the log too; the cluster never started.
        self.assertEqual(log.count(line), 1, log)
        self.assertNotIn("starting cluster node", log)

    async def test_gossip_port_in_use(self) -> None:
        node = LocalNode(reactor, "g")
        self.held(node.gossip_port, udp=True)
        status, log, errors = await self.ended(node)
        cause = f"{node.gossip_address} is in use (UDP or TCP)"
        self.assertEqual((status, errors), (1, f"clusternode: --bind: {cause}\n"))
        self.assertEqual(log.count(cause), 1, log)

    async def test_unresolvable_join_address(self) -> None:
        """
        No join address resolves: the node says why (whatever the DNS
        server answers) and never starts a cluster of its own.
        """
        node = LocalNode(
            reactor, "lost", ["--join-addresses", "nowhere.invalid"]
        )  # .invalid never resolves (RFC 6761)
        status, log, errors = await self.ended(node, STARTUP + RESOLVING)
        said = "|".join(re.escape(words) for words in DNS_WORDS)
        # One answer when every query had the same, else each query's.
        each = (
            f"A/AAAA nowhere.invalid: ({said})( / ({said}))?, "
            f"SRV nowhere.invalid: ({said})"
        )
        line = (
            "clusternode: --join-addresses: failed to find any valid join "
            f"addresses: nowhere.invalid: (({said})|{each})\n"
        )
        self.assertEqual(status, 1, log)
        self.assertRegex(errors, f"^{line}$")
        self.assertNotIn("will create a new cluster", log)
        self.assertNotIn("starting cluster node", log)

    async def test_pid_file_of_a_running_node(self) -> None:
        """
        A second node on the pid file of a running one does not start; the
        first, stopped by SIGTERM, ends by that signal and removes the file.
        """
        pid_file = os.path.join(self.directory, "node.pid")
        first = self.spawn(LocalNode(reactor, "a", ["--pid-file", pid_file]))
        await self.started([first], "the first node")
        with open(pid_file) as f:
            pid = int(f.read())
        await self.assertMistake(
            1,
            f"--pid-file: {pid_file} names process {pid}, which is running",
            "--pid-file",
            pid_file,
        )
        first.signal("TERM")
        self.assertEqual(await first.ended, -15, first.output[-3000:])
        self.assertEqual(first.errors, "")
        self.assertFalse(os.path.exists(pid_file))

    # --- the command line: status 2, before anything binds ---

    async def test_usage_error_alone(self) -> None:
        log = await self.assertMistake(
            2, "--bind: not HOST:PORT (port 0-65535): 'nope'", "--bind", "nope"
        )
        self.assertEqual(log, "")  # no usage text

    async def test_help(self) -> None:
        status, usage_text, errors = await self.ended(
            LocalNode(reactor, "n", ["--help"])
        )
        self.assertEqual((status, errors), (0, ""))
        self.assertTrue(usage_text.startswith("Usage: clusternode [options]\n"))

    async def test_bad_gossip_key(self) -> None:
        log = await self.assertMistake(
            2, f"--encrypt-key: {NOT_BASE64}", "--encrypt-key", MISTYPED_KEY
        )
        self.assertEqual(log, "")

    async def test_bad_key_in_keyring_file(self) -> None:
        path = os.path.join(self.directory, "keyring.json")
        with open(path, "w") as f:
            f.write(f'["{KEY16}", "{MISTYPED_KEY}"]')
        await self.assertMistake(
            2,
            f"--keyring-file: {path}, key 2: {NOT_BASE64}",
            "--keyring-file",
            path,
        )

    def tls(self, name: str, authority_name: str = "cluster CA") -> list[str]:
        """
        The TLS flags of a node C{name} whose authority is C{authority_name}
        (its files written under the test's directory).
        """
        authority = make_authority(authority_name)
        ca, _ = authority.write(self.directory, f"{name}-ca")
        cert, key = issue_certificate(
            authority, name, ip_addresses=["127.0.0.1"]
        ).write(self.directory, name)
        return ["--enable-tls", "--encrypt-key", KEY16, *tls_flags(ca, cert, key)]

    async def test_tls_file_missing(self) -> None:
        flags = self.tls("n")
        missing = os.path.join(self.directory, "missing.pem")
        flags[flags.index("--tls-cert-path") + 1] = missing
        await self.assertMistake(
            2, f"--tls-cert-path: {missing} does not exist", *flags
        )

    async def test_tls_file_not_pem(self) -> None:
        flags = self.tls("n")
        keyring = os.path.join(self.directory, "keyring.json")
        with open(keyring, "w") as f:
            f.write(f'["{KEY16}"]')
        flags[flags.index("--tls-ca-path") + 1] = keyring
        await self.assertMistake(
            2, f"--tls-ca-path: {keyring} is not a PEM certificate", *flags
        )

    async def test_tls_key_of_another_certificate(self) -> None:
        flags, other = self.tls("n"), self.tls("m")
        cert = flags[flags.index("--tls-cert-path") + 1]
        key = other[other.index("--tls-key-path") + 1]
        flags[flags.index("--tls-key-path") + 1] = key
        await self.assertMistake(
            2, f"--tls-key-path: {key} is not the key of {cert}", *flags
        )

    async def test_tls_certificate_of_another_authority(self) -> None:
        flags, foreign = self.tls("n"), self.tls("m", "another CA")
        ca = flags[flags.index("--tls-ca-path") + 1]
        for flag in ("--tls-cert-path", "--tls-key-path"):
            flags[flags.index(flag) + 1] = foreign[foreign.index(flag) + 1]
        cert = flags[flags.index("--tls-cert-path") + 1]
        await self.assertMistake(
            2, f"--tls-cert-path: {cert} is not signed by the authority in {ca}", *flags
        )

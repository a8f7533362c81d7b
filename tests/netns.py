"""
A private virtual LAN of Linux network namespaces, for tests that break
the network under real node processes.

L{VirtualLan} creates a I{hub} namespace holding a bridge and one
namespace per host, each joined to the bridge by a veth pair and given an
address in 10.213.0.0/24 (seen only inside these namespaces: none of them
has a route anywhere else).  Faults are nftables tables inside the host
namespaces, dropping on the I{input} hook, so that a packet is lost in
flight, silently, as on a wire, never refused by the sender's own stack:
L{VirtualLan.lose} drops a share of everything each host receives, and
L{VirtualLan.cut} drops what crosses between two groups of hosts until
L{VirtualLan.heal}.  Nothing in the root namespace (its interfaces, its
nftables) is touched.

L{NodeProcess} runs one C{clusternode} inside a host's namespace, its
status site on a UNIX socket, so that the test, in the root namespace,
can query it with no IP route at all.

Everything runs C{ip} and C{nft} as child processes of the reactor; it
needs root.  L{missing} says why it cannot run here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from cluster.daemon.demo import ProcessExit, SpawnedProcess, clusternode_command

__all__ = [
    "CommandError",
    "Host",
    "NodeProcess",
    "Unsupported",
    "VirtualLan",
    "missing",
]

SUBNET = "10.213.0"
# Inside a host's namespace, its end of the veth pair.
_DEVICE = "eth0"


def missing() -> str | None:
    """
    Why namespaces cannot be made here (not root, no C{ip}, no C{nft}),
    or C{None}.  Whether the kernel allows them is only known by trying:
    see L{VirtualLan.create}.
    """
    if os.geteuid() != 0:
        return "creating network namespaces (ip netns add) needs root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    return None


class CommandError(Exception):
    """
    C{ip} or C{nft} failed; the message holds the command and its stderr.
    """


class Unsupported(CommandError):
    """
    The kernel (or the container) allows no network namespace, or no
    nftables inside one.
    """


@attrs.frozen
class Host:
    """
    One namespace on the LAN.

    @ivar namespace: its name, for C{ip netns exec}.
    @ivar address: its IPv4 address on the bridge.
    """

    namespace: str
    address: str


@attrs.define(eq=False)
class VirtualLan:
    """
    Namespaces joined by a bridge, named after C{prefix} (unique to a test
    run, e.g. C{tcf-<pid>-}); L{destroy} removes every one it made.

    @ivar hosts: the host namespaces, in order of creation.
    """

    reactor: IReactorTime
    prefix: str
    hosts: list[Host] = attrs.field(factory=list, init=False)
    _namespaces: list[str] = attrs.field(factory=list, init=False)

    @property
    def hub(self) -> str:
        return f"{self.prefix}hub"

    async def run(self, *argv: str) -> str:
        """
        Run C{ip} or C{nft} with C{argv}.

        @return: its output.
        @raise CommandError: when it fails.
        """
        executable = shutil.which(argv[0]) or argv[0]
        out, err, code = await getProcessOutputAndValue(
            executable, argv[1:], env=dict(os.environ), reactor=self.reactor
        )
        if code != 0:
            text = err.decode("utf-8", "replace").strip()
            raise CommandError(f"{' '.join(argv)}: {text} (status {code})")
        return bytes(out).decode("utf-8", "replace")

    async def _namespace(self, name: str) -> None:
        await self.run("ip", "netns", "add", name)
        self._namespaces.append(name)
        await self.run("ip", "-n", name, "link", "set", "lo", "up")

    async def create(self, count: int) -> list[Host]:
        """
        The hub and its bridge, then C{count} hosts, 10.213.0.1 onwards,
        each with C{lo} up and its end of a veth pair into the bridge.

        @raise Unsupported: when the kernel refuses namespaces or
            nftables in them.
        @raise CommandError: when anything else fails; whatever was made
            is left for L{destroy}.
        """
        try:
            await self._namespace(self.hub)
            probe = ("ip", "netns", "exec", self.hub, "nft")
            await self.run(*probe, "add", "table", "inet", "probe")
            await self.run(*probe, "delete", "table", "inet", "probe")
        except CommandError as e:
            raise Unsupported(str(e)) from None
        hub = self.hub
        await self.run(*f"ip -n {hub} link add br0 type bridge".split())
        await self.run(*f"ip -n {hub} link set br0 up".split())
        for i in range(1, count + 1):
            host = Host(f"{self.prefix}{i}", f"{SUBNET}.{i}")
            ns = host.namespace
            await self._namespace(ns)
            # Both ends are made inside namespaces of ours: the root
            # namespace never sees them.
            port = f"port{i}"
            for command in (
                f"ip -n {hub} link add {port} type veth peer name {_DEVICE} netns {ns}",
                f"ip -n {hub} link set {port} master br0 up",
                f"ip -n {ns} addr add {host.address}/24 dev {_DEVICE}",
                f"ip -n {ns} link set {_DEVICE} up",
            ):
                await self.run(*command.split())
            self.hosts.append(host)
        return list(self.hosts)

    async def destroy(self) -> None:
        """
        Delete every namespace made (their interfaces and rules go with
        them), the last first, carrying on past failures.  Processes still
        inside keep theirs alive: stop them first.

        @raise CommandError: the first failure, once all were tried.
        """
        failures = []
        while self._namespaces:
            try:
                await self.run("ip", "netns", "del", self._namespaces.pop())
            except CommandError as e:
                failures.append(e)
        if failures:
            raise failures[0]

    async def nft(self, host: Host, *argv: str) -> str:
        """
        C{nft argv} inside C{host}'s namespace.
        """
        return await self.run("ip", "netns", "exec", host.namespace, "nft", *argv)

    async def lose(self, percent: int) -> None:
        """
        Each host drops C{percent}% of the IP packets it receives from the
        LAN, at random, each packet on its own: every directed link loses
        that share, and a round trip about twice as much.  Counted (see
        L{losses}) until L{restore}.
        """
        table = (
            "table inet loss { chain input { type filter hook input priority "
            f'filter; policy accept; iifname "{_DEVICE}" counter; '
            f'iifname "{_DEVICE}" numgen random mod 100 < {percent} counter drop; '
            "}; }"
        )
        for host in self.hosts:
            await self.nft(host, table)

    async def losses(self) -> tuple[int, int]:
        """
        Packets received from the LAN and packets dropped, over every host,
        since L{lose}.
        """
        received = dropped = 0
        for host in self.hosts:
            listing = json.loads(
                await self.nft(host, "-j", "list", "table", "inet", "loss")
            )
            counts = [
                expr["counter"]["packets"]
                for item in listing["nftables"]
                if "rule" in item
                for expr in item["rule"]["expr"]
                if "counter" in expr
            ]
            received += counts[0]
            dropped += counts[1]
        return received, dropped

    async def restore(self) -> None:
        """
        Stop the losses.
        """
        for host in self.hosts:
            await self.nft(host, "delete", "table", "inet", "loss")

    async def cut(self, side: Sequence[Host], other: Sequence[Host]) -> None:
        """
        Partition the LAN: no IP packet from one side reaches the other,
        both ways, until L{heal}.  (Host by host: the cut takes a few
        milliseconds to be complete.)
        """
        for near, far in ((side, other), (other, side)):
            addresses = ", ".join(h.address for h in far)
            table = (
                "table inet cut { chain input { type filter hook input priority "
                f"filter; policy accept; ip saddr {{ {addresses} }} drop; }}; }}"
            )
            for host in near:
                await self.nft(host, table)

    async def heal(self) -> None:
        """
        Undo L{cut}.
        """
        for host in self.hosts:
            await self.nft(host, "delete", "table", "inet", "cut")


@implementer(IAgentEndpointFactory)
@attrs.frozen
class _UNIXEndpoints:
    reactor: IReactorTime
    path: str

    def endpointForURI(self, uri: object) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(self.reactor, self.path)


@attrs.define(eq=False)
class NodeProcess(SpawnedProcess):
    """
    One C{clusternode} inside C{host}'s namespace, gossiping on the
    host's address, its status site on the UNIX socket C{socket}.

    C{ip netns exec} execs the interpreter, so the PID spawned is the
    node's own: L{signal<SpawnedProcess.signal>} reaches the node and
    nothing else.

    @ivar args: extra flags.
    """

    reactor: IReactorTime
    name: str
    host: Host
    socket: str
    args: Sequence[str] = ()
    port: int = 7946
    _protocol: ProcessExit = attrs.field(factory=ProcessExit, init=False)
    _pid: int | None = attrs.field(default=None, init=False)
    _pool: HTTPConnectionPool = attrs.field(init=False)
    _http: HTTPClient = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Persistent: a test polls its nodes several times a second.
        self._pool = HTTPConnectionPool(self.reactor, persistent=True)
        agent = Agent.usingEndpointFactory(
            self.reactor, _UNIXEndpoints(self.reactor, self.socket), pool=self._pool
        )
        self._http = HTTPClient(agent)

    @property
    def gossip_address(self) -> str:
        return f"{self.host.address}:{self.port}"

    def command(self) -> list[str]:
        return [
            shutil.which("ip") or "ip",
            "netns",
            "exec",
            self.host.namespace,
            *clusternode_command(
                self.name, self.gossip_address, f"unix:{self.socket}", self.args
            ),
        ]

    async def kill(self) -> None:
        """
        C{SIGKILL} (a stopped process too), then wait for it to end.
        """
        if self._pid is not None:
            self.signal("KILL")
            await self.ended
        await self._pool.closeCachedConnections()

    async def fetch(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """
        C{GET path} on the status site: the status code and body.

        @raise Exception: when it does not answer within C{timeout}
            seconds (a frozen node never does).
        """

        async def fetching() -> tuple[int, bytes]:
            response = await self._http.get(f"http://{self.name}{path}")
            return response.code, await treq.content(response)

        d = Deferred.fromCoroutine(fetching())
        return await d.addTimeout(timeout, self.reactor)

    async def get(self, path: str, timeout: float = 10.0) -> Any:
        """
        C{GET path} on the status site, decoded from JSON.
        """
        _, body = await self.fetch(path, timeout)
        return json.loads(body)

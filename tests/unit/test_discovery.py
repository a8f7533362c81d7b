"""
Tests for L{cluster.alloy.discovery}: Alloy's join-address resolution on a fake
resolver (nothing is looked up for real), and the mutual exclusion of join
addresses and other discovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IResolver
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.names import client
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from cluster.alloy import discovery
from cluster.alloy.discovery import (
    DNS_TIMEOUT,
    DiscoveryError,
    join_addresses,
    peer_discovery,
    static,
    validate_discovery,
)
from cluster.alloy.options import OptionError
from cluster.gossip import address as address_module
from tests.helpers import FakeResolver

SRV = "_alloy._tcp.example.invalid"
"""
The SRV name the C{dnssrv+} and C{dnssrvnoa+} tests look up.
"""


def srv_records(
    *targets: tuple[str, int],
    a: dict[str, list[str]] | None = None,
    aaaa: dict[str, list[str]] | None = None,
) -> FakeResolver:
    """
    A resolver whose L{SRV} records name C{targets} (host, port), with
    the given A and AAAA records.
    """
    return FakeResolver(a=a, aaaa=aaaa, srv={SRV: list(targets)})


def capture() -> tuple[Logger, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    return Logger(observer=cast(ILogObserver, events.append)), events


def warnings(events: list[dict[str, Any]]) -> list[str]:
    return [e["addr"] for e in events if e["log_level"] == LogLevel.warn]


class FakeResolverTests(SynchronousTestCase):
    def test_interface(self) -> None:
        """
        The fake is a complete L{IResolver}.
        """
        self.assertTrue(verifyObject(IResolver, FakeResolver()))


class StaticTests(SynchronousTestCase):
    def test_static(self) -> None:
        """
        L{static} returns its addresses every time, as fresh lists.
        """
        addresses = ["127.0.0.1:7946"]
        fn = static(addresses)
        addresses.append("127.0.0.2:7946")
        first = fn()
        self.assertEqual(first, ["127.0.0.1:7946"])
        assert isinstance(first, list)
        first.append("changed")
        self.assertEqual(fn(), ["127.0.0.1:7946"])


class JoinAddressTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.log, self.events = capture()

    def discover(
        self, addresses: Any, resolver: FakeResolver, port: int = 8888, **kw: Any
    ) -> Deferred[list[str]]:
        d = join_addresses(addresses, port, resolver, log=self.log, **kw)()
        assert isinstance(d, Deferred)
        return d

    def resolve(
        self, addresses: Any, resolver: FakeResolver, port: int = 8888, **kw: Any
    ) -> list[str]:
        return self.successResultOf(self.discover(addresses, resolver, port, **kw))

    # Literal IPs.

    def test_literal_ipv4(self) -> None:
        """
        IPv4 literals are used as is, with their port or the default one,
        without any DNS query.
        """
        resolver = FakeResolver()
        self.assertEqual(
            self.resolve(["127.0.0.1", "127.0.0.2:7777"], resolver),
            ["127.0.0.1:8888", "127.0.0.2:7777"],
        )
        self.assertEqual(resolver.queries, [])

    def test_literal_ipv6(self) -> None:
        """
        IPv6 literals, bare or as C{[v6]:port}, are bracketed in the result;
        a bare one takes the default port (Go's SplitHostPort refuses it).
        """
        resolver = FakeResolver()
        self.assertEqual(
            self.resolve(["::1", "[::1]:7777", "[::2]"], resolver),
            ["[::1]:8888", "[::1]:7777", "[::2]:8888"],
        )
        self.assertEqual(resolver.queries, [])

    def test_literal_normalised(self) -> None:
        """
        Literals are printed as Go's C{net.IP.String()} does: compressed
        IPv6, IPv4-mapped addresses as IPv4; equal ones are de-duplicated.
        """
        self.assertEqual(
            self.resolve(
                ["0:0:0:0:0:0:0:1", "::1", "::ffff:127.0.0.1", "127.0.0.1"],
                FakeResolver(),
            ),
            ["[::1]:8888", "127.0.0.1:8888"],
        )

    def test_invalid_ip_is_a_name(self) -> None:
        """
        Something that is not a valid IP (Alloy's test uses 10.301.10.10)
        is looked up as a name, and warned about when nothing is found.
        """
        resolver = FakeResolver()
        result = self.resolve(["127.0.0.1", "127.0.0.300"], resolver)
        self.assertEqual(result, ["127.0.0.1:8888"])
        self.assertEqual(
            resolver.queries,
            [("A", "127.0.0.300"), ("AAAA", "127.0.0.300"), ("SRV", "127.0.0.300")],
        )
        self.assertEqual(warnings(self.events), ["127.0.0.300"])

    # dns+

    def test_dns_prefix(self) -> None:
        """
        C{dns+name} takes the A then AAAA records of C{name} with the
        default port; nothing else is asked.
        """
        resolver = FakeResolver(
            a={"peers.example.invalid": ["127.0.0.1", "127.0.0.2"]},
            aaaa={"peers.example.invalid": ["::1"]},
            srv={"peers.example.invalid": [("srv.example.invalid", 9999)]},
        )
        self.assertEqual(
            self.resolve("dns+peers.example.invalid", resolver),
            ["127.0.0.1:8888", "127.0.0.2:8888", "[::1]:8888"],
        )
        self.assertEqual(
            resolver.queries,
            [("A", "peers.example.invalid"), ("AAAA", "peers.example.invalid")],
        )

    def test_dns_prefix_with_port(self) -> None:
        """
        C{dns+name:port} uses that port (Alloy splits the port off first).
        """
        resolver = FakeResolver(a={"peers.example.invalid": ["127.0.0.1"]})
        self.assertEqual(
            self.resolve(["dns+peers.example.invalid:7777"], resolver),
            ["127.0.0.1:7777"],
        )

    def test_prefixed_failure_not_retried(self) -> None:
        """
        A prefixed name that resolves to nothing is warned about; it is
        not retried as a plain name.
        """
        resolver = FakeResolver()
        self.failureResultOf(
            self.discover(["dns+gone.example.invalid"], resolver), DiscoveryError
        )
        self.assertEqual(
            resolver.queries,
            [("A", "gone.example.invalid"), ("AAAA", "gone.example.invalid")],
        )
        self.assertEqual(warnings(self.events), ["dns+gone.example.invalid"])

    # dnssrv+ and dnssrvnoa+

    def test_dnssrv_default_port(self) -> None:
        """
        C{dnssrv+name}: the SRV targets' A/AAAA addresses, with the default
        port, not the records' (as Alloy).
        """
        resolver = srv_records(
            ("a.example.invalid", 12345),
            ("b.example.invalid", 12346),
            a={"a.example.invalid": ["127.0.0.1"], "b.example.invalid": ["127.0.0.2"]},
            aaaa={"b.example.invalid": ["::1"]},
        )
        self.assertEqual(
            self.resolve(f"dnssrv+{SRV}", resolver),
            ["127.0.0.1:8888", "127.0.0.2:8888", "[::1]:8888"],
        )
        self.assertEqual(resolver.queries[0], ("SRV", SRV))
        self.assertEqual(
            sorted(resolver.queries[1:]),
            [
                ("A", "a.example.invalid"),
                ("A", "b.example.invalid"),
                ("AAAA", "a.example.invalid"),
                ("AAAA", "b.example.invalid"),
            ],
        )

    def test_dnssrv_explicit_port(self) -> None:
        """
        A port on a C{dnssrv+} address applies to every target.
        """
        resolver = srv_records(
            ("a.example.invalid", 12345), a={"a.example.invalid": ["127.0.0.1"]}
        )
        self.assertEqual(
            self.resolve(f"dnssrv+{SRV}:7777", resolver),
            ["127.0.0.1:7777"],
        )

    def test_dnssrv_record_ports(self) -> None:
        """
        With C{srv_ports=True} the records' ports are used, unless the
        address carries its own.
        """
        resolver = srv_records(
            ("a.example.invalid", 12345), a={"a.example.invalid": ["127.0.0.1"]}
        )
        self.assertEqual(
            self.resolve(
                [
                    f"dnssrv+{SRV}",
                    f"dnssrv+{SRV}:7777",
                ],
                resolver,
                srv_ports=True,
            ),
            ["127.0.0.1:12345", "127.0.0.1:7777"],
        )

    def test_dnssrv_unresolvable_target(self) -> None:
        """
        A C{dnssrv+} target without addresses is skipped; the others count.
        """
        resolver = srv_records(
            ("gone.example.invalid", 1),
            ("a.example.invalid", 2),
            a={"a.example.invalid": ["127.0.0.1"]},
        )
        self.assertEqual(
            self.resolve(f"dnssrv+{SRV}", resolver),
            ["127.0.0.1:8888"],
        )
        self.assertEqual(warnings(self.events), [])

    def test_dnssrvnoa(self) -> None:
        """
        C{dnssrvnoa+name}: the SRV targets as host names, default port, no
        A/AAAA lookups (Alloy's C{dnssrvnoa records are parsed} case).
        """
        resolver = srv_records(
            ("a.example.invalid", 12345),
            ("b.example.invalid.", 12346),
            a={"host2.example.invalid": ["127.0.0.10"]},
        )
        self.assertEqual(
            self.resolve(
                [
                    f"dnssrvnoa+{SRV}",
                    "dns+host2.example.invalid:7777",
                ],
                resolver,
            ),
            ["a.example.invalid:8888", "b.example.invalid:8888", "127.0.0.10:7777"],
        )
        self.assertNotIn(("A", "a.example.invalid"), resolver.queries)

    def test_dnssrvnoa_record_ports(self) -> None:
        """
        C{srv_ports=True} applies to C{dnssrvnoa+} too; a record port of 0
        means "none", so the default port is used.
        """
        resolver = srv_records(("a.example.invalid", 12345), ("b.example.invalid", 0))
        self.assertEqual(
            self.resolve(f"dnssrvnoa+{SRV}", resolver, srv_ports=True),
            ["a.example.invalid:12345", "b.example.invalid:8888"],
        )

    def test_srv_root_target_skipped(self) -> None:
        """
        An SRV target of C{.} ("no service here", RFC 2782) is no peer.
        """
        resolver = srv_records(("", 1))
        self.failureResultOf(
            self.discover(f"dnssrvnoa+{SRV}", resolver),
            DiscoveryError,
        )

    # Plain names: A/AAAA, then SRV.

    def test_name_a_records(self) -> None:
        """
        A plain name's A/AAAA records win; SRV is not asked (Alloy's
        C{A records take precedence over SRV records}).
        """
        resolver = FakeResolver(
            a={"peers.example.invalid": ["127.0.0.11"]},
            srv={"peers.example.invalid": [("127.0.0.10", 12345)]},
        )
        self.assertEqual(
            self.resolve("peers.example.invalid", resolver), ["127.0.0.11:8888"]
        )
        self.assertNotIn(("SRV", "peers.example.invalid"), resolver.queries)

    def test_name_aaaa_only(self) -> None:
        """
        A failing A query does not matter when AAAA answers (Go's LookupIP
        fails only when both do).
        """
        resolver = FakeResolver(aaaa={"peers.example.invalid": ["::1"]})
        self.assertEqual(
            self.resolve("peers.example.invalid:7777", resolver), ["[::1]:7777"]
        )

    def test_name_falls_back_to_srv(self) -> None:
        """
        When A and AAAA find nothing, the SRV targets are used as names
        with the address's port (Alloy's C{multiple hosts and multiple SRV
        records found}: record ports ignored, duplicates dropped).
        """
        resolver = FakeResolver(
            srv={
                "host1.example.invalid": [("127.0.0.10", 12345), ("127.0.0.10", 12346)],
                "host2.example.invalid": [("127.0.0.11", 12346)],
            },
        )
        self.assertEqual(
            self.resolve(
                ["host1.example.invalid", "host2.example.invalid:7777"], resolver
            ),
            ["127.0.0.10:8888", "127.0.0.11:7777"],
        )
        for host in ("host1.example.invalid", "host2.example.invalid"):
            asked = [kind for kind, name in resolver.queries if name == host]
            self.assertEqual(asked, ["A", "AAAA", "SRV"])

    def test_cname_records_ignored(self) -> None:
        """
        CNAME records in an answer are not taken for addresses.
        """
        resolver = FakeResolver(
            a={"alias.example.invalid": ["127.0.0.1"]},
            cname={"alias.example.invalid": "real.example.invalid"},
        )
        self.assertEqual(
            self.resolve("alias.example.invalid", resolver), ["127.0.0.1:8888"]
        )

    def test_timeout_passed(self) -> None:
        """
        Every query carries the bounded retry schedule.
        """
        resolver = FakeResolver(a={"peers.example.invalid": ["127.0.0.1"]})
        self.resolve("peers.example.invalid", resolver)
        self.resolve("peers.example.invalid", resolver, timeout=(2,))
        self.assertEqual(resolver.timeouts, [DNS_TIMEOUT] * 2 + [(2,)] * 2)

    # Lists, de-duplication, warnings and failures.

    def test_comma_separated_string(self) -> None:
        """
        One comma-separated string is split (blanks and empty entries
        dropped).
        """
        self.assertEqual(
            self.resolve(" 127.0.0.1, ,127.0.0.2:7777,", FakeResolver()),
            ["127.0.0.1:8888", "127.0.0.2:7777"],
        )

    def test_deduplicated_in_order(self) -> None:
        """
        Duplicates across and within addresses are dropped, keeping the
        first occurrence.
        """
        resolver = FakeResolver(
            a={
                "host1.example.invalid": ["127.0.0.10", "127.0.0.11"],
                "host2.example.invalid": ["127.0.0.11", "127.0.0.10"],
            }
        )
        self.assertEqual(
            self.resolve(
                [
                    "127.0.0.11",
                    "host1.example.invalid",
                    "host2.example.invalid",
                    "127.0.0.10:8888",
                    "host2.example.invalid:7777",
                ],
                resolver,
            ),
            [
                "127.0.0.11:8888",
                "127.0.0.10:8888",
                "127.0.0.11:7777",
                "127.0.0.10:7777",
            ],
        )

    def test_warning_per_unresolvable(self) -> None:
        """
        Each address that resolves to nothing is warned about once, and
        the others are still returned.
        """
        resolver = FakeResolver(a={"host2.example.invalid": ["127.0.0.1"]})
        self.assertEqual(
            self.resolve(
                [
                    "gone1.example.invalid",
                    "host2.example.invalid",
                    "dnssrv+_gone._tcp.example.invalid",
                ],
                resolver,
            ),
            ["127.0.0.1:8888"],
        )
        self.assertEqual(
            warnings(self.events),
            ["gone1.example.invalid", "dnssrv+_gone._tcp.example.invalid"],
        )

    def test_nothing_resolved(self) -> None:
        """
        When nothing resolves, the discovery fails with a
        L{DiscoveryError} giving each address and why.
        """
        failure = self.failureResultOf(
            self.discover(
                ["gone1.example.invalid", "dnssrvnoa+_gone._tcp.example.invalid"],
                FakeResolver(),
            ),
            DiscoveryError,
        )
        error = failure.value
        assert isinstance(error, DiscoveryError)
        message = str(error)
        self.assertIn("failed to find any valid join addresses", message)
        # Every query had the same answer: said once per address.
        self.assertEqual(
            message,
            "failed to find any valid join addresses: gone1.example.invalid: no "
            "such name; dnssrvnoa+_gone._tcp.example.invalid: no such name",
        )
        self.assertNotIn("DNSNameError", message)
        self.assertEqual(
            list(error.reasons),
            ["gone1.example.invalid", "dnssrvnoa+_gone._tcp.example.invalid"],
        )
        self.assertEqual(
            error.reasons["dnssrvnoa+_gone._tcp.example.invalid"][0][:4], "SRV "
        )
        self.assertEqual(len(warnings(self.events)), 2)

    def test_empty(self) -> None:
        """
        No addresses: an empty list, and no resolver is made.
        """

        def no_resolver(reactor: object) -> IResolver:
            raise AssertionError("resolver created")

        self.patch(discovery, "default_resolver", no_resolver)
        empties: list[Sequence[str] | str] = [[], "", " , "]
        for empty in empties:
            d = join_addresses(empty, 8888)()
            assert isinstance(d, Deferred)
            self.assertEqual(self.successResultOf(d), [])

    def test_default_resolver_lazy(self) -> None:
        """
        Without a resolver, the system one is made on first use, once.
        """
        made: list[object] = []
        resolver = FakeResolver(a={"peers.example.invalid": ["127.0.0.1"]})

        def make(reactor: object) -> IResolver:
            made.append(reactor)
            return resolver

        self.patch(discovery, "default_resolver", make)
        marker = Clock()
        fn = join_addresses("peers.example.invalid", 8888, reactor=marker)
        self.assertEqual(made, [])
        for _ in range(2):
            d = fn()
            assert isinstance(d, Deferred)
            self.assertEqual(self.successResultOf(d), ["127.0.0.1:8888"])
        self.assertEqual(made, [marker])

    def test_real_default_resolver(self) -> None:
        """
        The default resolver is C{twisted.names}' system resolver, on the
        given reactor when there is one (nothing is queried).
        """
        made: list[IResolver] = []

        def create() -> IResolver:
            made.append(FakeResolver())
            return made[-1]

        self.patch(client, "createResolver", create)
        self.assertIs(address_module.default_resolver(None), made[0])

        clock = Clock()
        resolver = address_module.default_resolver(clock)
        self.assertTrue(verifyObject(IResolver, resolver))
        self.assertEqual(len(made), 1)
        # Its resolv.conf re-reading is scheduled on our clock.
        self.assertTrue(clock.getDelayedCalls())

    def test_concurrent_in_order(self) -> None:
        """
        All addresses are looked up at once; results keep input order
        whatever order the answers come in.
        """
        resolver = FakeResolver(
            a={
                "host1.example.invalid": ["127.0.0.1"],
                "host2.example.invalid": ["127.0.0.2"],
            },
            hold=True,
        )
        d = self.discover(["host1.example.invalid", "host2.example.invalid"], resolver)
        self.assertNoResult(d)
        self.assertEqual(len(resolver.held), 4)
        resolver.release(reverse=True)
        self.assertEqual(self.successResultOf(d), ["127.0.0.1:8888", "127.0.0.2:8888"])

    def test_cancel(self) -> None:
        """
        Cancelling the discovery cancels the pending queries, and is not
        taken for "nothing found" (no warning).
        """
        resolver = FakeResolver(a={"host1.example.invalid": ["127.0.0.1"]}, hold=True)
        d = self.discover(["host1.example.invalid", "host2.example.invalid"], resolver)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(resolver.cancelled, resolver.queries)
        self.assertEqual(len(resolver.cancelled), 4)
        self.assertEqual(warnings(self.events), [])


class SplitHostPortTests(SynchronousTestCase):
    def test_split(self) -> None:
        """
        Addresses split as Go's C{net.SplitHostPort}; C{None} where Go
        fails (the whole address is then a host with the default port).
        """
        cases: dict[str, tuple[str, str] | None] = {
            "127.0.0.1:7946": ("127.0.0.1", "7946"),
            "127.0.0.1": None,
            "[::1]:7946": ("::1", "7946"),
            "[::1]": None,
            "::1": None,
            "::1:7946": None,
            "dns+peers.example.invalid:7777": ("dns+peers.example.invalid", "7777"),
            "dnssrv+_a._tcp.example.invalid": None,
            "[::1]x:7946": None,
            "[::1]:79:46": None,
            "a]:7946": None,
            # Go does not check the port either.
            "peers.example.invalid:": ("peers.example.invalid", ""),
        }
        for address, expected in cases.items():
            self.assertEqual(address_module.split_host_port(address), expected, address)


class MutualExclusionTests(SynchronousTestCase):
    def test_both_refused(self) -> None:
        """
        Join addresses and another discovery method cannot both be set;
        the error names both fields but does not echo the other method's
        configuration (it may hold credentials).
        """
        for other in ("provider=aws secret_access_key=hidden", static([])):
            with self.assertRaises(OptionError) as raised:
                validate_discovery(["127.0.0.1"], other)
            self.assertEqual(raised.exception.field, "discover_peers")
            message = str(raised.exception)
            self.assertIn("at most one of join_addresses", message)
            self.assertIn("discover_peers", message)
            self.assertIn("--cluster.join-addresses", message)
            self.assertIn("'127.0.0.1'", message)
            self.assertNotIn("hidden", message)

    def test_one_allowed(self) -> None:
        """
        Either one alone, or neither, is fine.
        """
        validate_discovery(["127.0.0.1"], None)
        validate_discovery("127.0.0.1", "")
        validate_discovery([], "provider=aws")
        validate_discovery(" , ", static(["127.0.0.1:7946"]))
        validate_discovery([], None)

    def test_peer_discovery(self) -> None:
        """
        L{peer_discovery} builds the discovery as Alloy's
        C{NewPeerDiscoveryFn}: join addresses, the other function, or none.
        """
        resolver = FakeResolver()
        fn = peer_discovery("127.0.0.1", default_port=7946, resolver=resolver)
        assert fn is not None
        d = fn()
        assert isinstance(d, Deferred)
        self.assertEqual(self.successResultOf(d), ["127.0.0.1:7946"])

        other = static(["127.0.0.2:7946"])
        self.assertIs(peer_discovery([], other, default_port=7946), other)
        self.assertIsNone(peer_discovery([], default_port=7946))
        self.assertIsNone(peer_discovery([], "", default_port=7946))
        self.assertRaises(
            ValueError, peer_discovery, ["127.0.0.1"], other, default_port=7946
        )

    def test_go_discover_refused(self) -> None:
        """
        Alloy's go-discover settings (a string) have no counterpart: a
        clear error naming the field, without echoing the settings.
        """
        with self.assertRaises(OptionError) as raised:
            peer_discovery([], "provider=aws secret=hidden", default_port=7946)
        self.assertEqual(raised.exception.field, "discover_peers")
        self.assertIn("discover_peers", str(raised.exception))
        self.assertNotIn("hidden", str(raised.exception))

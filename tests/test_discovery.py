"""
Tests for L{cluster.discovery}: Alloy's join-address resolution, on a fake
resolver (nothing is looked up for real).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IResolver
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.trial.unittest import SynchronousTestCase

from cluster.discovery import (
    DiscoveryError,
    join_addresses,
    peer_discovery,
    static,
)

Result = tuple[list[dns.RRHeader], list[dns.RRHeader], list[dns.RRHeader]]


class FakeResolver:
    """
    Answers from fixed tables; records what was asked.
    """

    def __init__(
        self,
        a: dict[str, list[str]] | None = None,
        aaaa: dict[str, list[str]] | None = None,
        srv: dict[str, list[tuple[str, int]]] | None = None,
    ) -> None:
        self.a = a or {}
        self.aaaa = aaaa or {}
        self.srv = srv or {}
        self.queries: list[tuple[str, str]] = []

    def _answer(self, name: str, records: list[Any], kind: int) -> Deferred[Result]:
        if not records:
            return fail(DNSNameError(name))
        headers = [dns.RRHeader(name=name, type=kind, payload=r) for r in records]
        return succeed((headers, [], []))

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Result]:
        self.queries.append(("A", name))
        records = [dns.Record_A(ip) for ip in self.a.get(name, [])]
        return self._answer(name, records, dns.A)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred[Result]:
        self.queries.append(("AAAA", name))
        records = [dns.Record_AAAA(ip) for ip in self.aaaa.get(name, [])]
        return self._answer(name, records, dns.AAAA)

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Result]:
        self.queries.append(("SRV", name))
        records = [
            dns.Record_SRV(0, 0, port, target)
            for target, port in self.srv.get(name, [])
        ]
        return self._answer(name, records, dns.SRV)


class JoinAddressTests(SynchronousTestCase):
    def discover(self, addresses: Any, resolver: FakeResolver, port: int = 7946) -> Any:
        d = join_addresses(addresses, port, cast(IResolver, resolver))()
        assert isinstance(d, Deferred)
        return d

    def test_literal_ips(self) -> None:
        resolver = FakeResolver()
        result = self.successResultOf(
            self.discover(
                ["127.0.0.1", "127.0.0.2:9000", "::1", "[::1]:9001"], resolver
            )
        )
        self.assertEqual(
            result, ["127.0.0.1:7946", "127.0.0.2:9000", "[::1]:7946", "[::1]:9001"]
        )
        self.assertEqual(resolver.queries, [])

    def test_comma_separated_string_and_dedup(self) -> None:
        result = self.successResultOf(
            self.discover("127.0.0.1, 127.0.0.1:7946,127.0.0.3", FakeResolver())
        )
        self.assertEqual(result, ["127.0.0.1:7946", "127.0.0.3:7946"])

    def test_dns_prefix_a_and_aaaa(self) -> None:
        resolver = FakeResolver(
            a={"peers.example.invalid": ["127.0.0.5", "127.0.0.6"]},
            aaaa={"peers.example.invalid": ["::1"]},
        )
        result = self.successResultOf(
            self.discover(["dns+peers.example.invalid:8000"], resolver)
        )
        self.assertEqual(result, ["127.0.0.5:8000", "127.0.0.6:8000", "[::1]:8000"])

    def test_srv_targets_take_the_address_port(self) -> None:
        # Alloy joins SRV targets with the join address's (or default)
        # port, not the record's.
        resolver = FakeResolver(
            srv={
                "_c._tcp.example.invalid": [
                    ("a.example.invalid", 1111),
                    ("b.example.invalid", 2222),
                ]
            }
        )
        for prefix in ("dnssrv+", "dnssrvnoa+"):
            result = self.successResultOf(
                self.discover(
                    [prefix + "_c._tcp.example.invalid"], resolver, port=12345
                )
            )
            self.assertEqual(
                result, ["a.example.invalid:12345", "b.example.invalid:12345"]
            )
        self.assertNotIn(("A", "a.example.invalid"), resolver.queries)

    def test_plain_name_tries_a_then_srv(self) -> None:
        resolver = FakeResolver(
            a={"host.example.invalid": ["127.0.0.7"]},
            srv={"svc.example.invalid": [("t.example.invalid", 1)]},
        )
        result = self.successResultOf(
            self.discover(["host.example.invalid", "svc.example.invalid:9"], resolver)
        )
        self.assertEqual(result, ["127.0.0.7:7946", "t.example.invalid:9"])
        # A name with A records is never asked for SRV.
        self.assertNotIn(("SRV", "host.example.invalid"), resolver.queries)
        self.assertEqual(
            [q for q in resolver.queries if q[1] == "svc.example.invalid"],
            [
                ("A", "svc.example.invalid"),
                ("AAAA", "svc.example.invalid"),
                ("SRV", "svc.example.invalid"),
            ],
        )

    def test_unresolvable_names_are_skipped_with_a_warning(self) -> None:
        warnings: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_level").name == "warn":  # type: ignore[union-attr]
                warnings.append(event["addr"])

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        resolver = FakeResolver(a={"ok.example.invalid": ["127.0.0.8"]})
        result = self.successResultOf(
            self.discover(
                [
                    "gone.example.invalid",
                    "ok.example.invalid",
                    "dns+nope.example.invalid",
                ],
                resolver,
            )
        )
        self.assertEqual(result, ["127.0.0.8:7946"])
        self.assertEqual(warnings, ["gone.example.invalid", "dns+nope.example.invalid"])

    def test_nothing_resolved_fails(self) -> None:
        failure = self.failureResultOf(
            self.discover(["gone.example.invalid"], FakeResolver()), DiscoveryError
        )
        self.assertIn("failed to find any valid join addresses", str(failure.value))

    def test_empty_is_no_peers(self) -> None:
        self.assertEqual(self.successResultOf(self.discover([], FakeResolver())), [])


class PeerDiscoveryTests(SynchronousTestCase):
    def test_mutual_exclusion(self) -> None:
        error = self.assertRaises(
            ValueError, peer_discovery, ["127.0.0.1"], "provider=aws"
        )
        self.assertIn(
            "at most one of join peers and discover peers may be set", str(error)
        )

    def test_cloud_discovery_is_refused(self) -> None:
        error = self.assertRaises(ValueError, peer_discovery, [], "provider=aws")
        self.assertIn("discover_peers", str(error))

    def test_none_configured(self) -> None:
        self.assertIsNone(peer_discovery([], ""))

    def test_join_peers(self) -> None:
        discover = peer_discovery(
            ["127.0.0.1"], "", 4000, cast(IResolver, FakeResolver())
        )
        assert discover is not None
        self.assertEqual(self.successResultOf(discover()), ["127.0.0.1:4000"])  # type: ignore[arg-type]

    def test_static(self) -> None:
        discover = static(["127.0.0.1:1"])
        self.assertEqual(discover(), ["127.0.0.1:1"])

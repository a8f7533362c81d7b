"""
The timing profiles: C{alloy}'s values against the Go sources it copies
(L{cluster.gossip.GossipConfig.alloy}, C{--profile alloy}), and the table
of detection bounds in C{docs/profiles.md} against the code that computes
it.
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from types import ModuleType

import attrs
from twisted.trial.unittest import SynchronousTestCase

from cluster.daemon.flags import PROFILES, profile
from cluster.daemon.tap import ClusterNodeOptions
from cluster.gossip import GossipConfig
from cluster.gossip.suspicion import suspicion_timeout, worst_case_detection


def checkout() -> Path:
    """
    @return: the checkout these tests are in (the folder holding C{docs/}).
    """
    for directory in Path(__file__).resolve().parents:
        if (directory / "docs" / "profiles.md").is_file():
            return directory
    raise FileNotFoundError("no docs/profiles.md above the tests")


def load_generator() -> ModuleType:
    """
    @return: C{docs/generate_profiles.py}, the script that writes the table.
    """
    path = checkout() / "docs" / "generate_profiles.py"
    spec = importlib.util.spec_from_file_location("generate_profiles", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def differing_fields(a: GossipConfig, b: GossipConfig) -> dict[str, object]:
    """
    @return: the fields whose values differ, with C{a}'s value.
    """
    return {
        field.name: getattr(a, field.name)
        for field in attrs.fields(GossipConfig)
        if getattr(a, field.name) != getattr(b, field.name)
    }


class AlloyProfileTests(SynchronousTestCase):
    """
    L{GossipConfig.alloy} is memberlist's LAN profile with ckit's changes,
    but for the two that only make sense on ckit's HTTP/2 transport.
    """

    def test_values_are_ckits(self) -> None:
        """
        grafana/ckit C{node.go}, C{NewNode} (commit bbed30d, 2026-02; the
        same lines since 2025-05), after the transport is built::

            mlc := memberlist.DefaultLANConfig()
            ...
            mlc.Label = cfg.Label
            mlc.ProbeInterval = 5 * time.Second
            mlc.ProbeTimeout = 2 * time.Second
            mlc.DisableTcpPings = true           // No point in TCP ping ...
            mlc.UDPBufferSize = 10 * 1024 * 1024 // Our buffer size can be ...
            mlc.TCPTimeout = 2 * time.Second

        Alloy (C{internal/service/cluster/cluster.go}, C{New}) passes only
        C{Name}, C{AdvertiseAddr}, C{Log}, C{Sharder} and
        C{Label: opts.ClusterName} in C{ckit.Config}: no timing of its own.

        The three timings are ckit's; C{DisableTcpPings} and
        C{UDPBufferSize} stay at memberlist's C{DefaultLANConfig} values
        (C{DisableTcpPings: false}, C{UDPBufferSize: 1400}), since our
        packets are UDP datagrams; every other field is C{DefaultLANConfig}'s,
        as in ckit.
        """
        alloy = GossipConfig.alloy(name="n")
        lan = GossipConfig.lan(name="n")
        self.assertEqual(alloy.probe_interval, 5.0)  # 5 * time.Second
        self.assertEqual(alloy.probe_timeout, 2.0)  # 2 * time.Second
        self.assertEqual(alloy.tcp_timeout, 2.0)  # 2 * time.Second
        # Kept from DefaultLANConfig, where ckit departs for HTTP/2's sake.
        self.assertFalse(alloy.disable_tcp_pings)
        self.assertEqual(alloy.udp_buffer_size, 1400)
        self.assertEqual(
            differing_fields(alloy, lan),
            {"probe_interval": 5.0, "probe_timeout": 2.0, "tcp_timeout": 2.0},
        )

    def test_lan_is_memberlists(self) -> None:
        """
        The base both start from, hashicorp/memberlist C{config.go},
        C{DefaultLANConfig} (the timing fields)::

            TCPTimeout:              10 * time.Second,
            IndirectChecks:          3,
            RetransmitMult:          4,
            SuspicionMult:           4,
            SuspicionMaxTimeoutMult: 6,
            PushPullInterval:        30 * time.Second,
            ProbeTimeout:            500 * time.Millisecond,
            ProbeInterval:           1 * time.Second,
            DisableTcpPings:         false,
            AwarenessMaxMultiplier:  8,
            GossipNodes:          3,
            GossipInterval:       200 * time.Millisecond,
            GossipToTheDeadTime:  30 * time.Second,
            UDPBufferSize:     1400,
        """
        alloy = GossipConfig.alloy()
        self.assertEqual(
            (
                alloy.indirect_checks,
                alloy.retransmit_mult,
                alloy.suspicion_mult,
                alloy.suspicion_max_timeout_mult,
                alloy.push_pull_interval,
                alloy.awareness_max_multiplier,
                alloy.gossip_nodes,
                alloy.gossip_interval,
                alloy.gossip_to_the_dead_time,
            ),
            (3, 4, 4, 6, 30.0, 8, 3, 0.2, 30.0),
        )
        lan = GossipConfig.lan()
        self.assertEqual(
            (lan.tcp_timeout, lan.probe_timeout, lan.probe_interval),
            (10.0, 0.5, 1.0),
        )

    def test_suspicion_below_ten_members(self) -> None:
        """
        Alloy's shortest suspicion is 20 s below ten members, LAN's 4 s.
        """
        alloy, lan = GossipConfig.alloy(), GossipConfig.lan()
        self.assertEqual(
            suspicion_timeout(alloy.suspicion_mult, 9, alloy.probe_interval), 20.0
        )
        self.assertEqual(
            suspicion_timeout(lan.suspicion_mult, 9, lan.probe_interval), 4.0
        )

    def test_overrides(self) -> None:
        """
        Any field can be overridden by keyword, ckit's timings included.
        """
        config = GossipConfig.alloy(label="prod", probe_timeout=1.0)
        self.assertEqual(
            (config.label, config.probe_timeout, config.probe_interval),
            ("prod", 1.0, 5.0),
        )
        self.assertRaises(ValueError, GossipConfig.alloy, probe_timeout=6.0)

    def test_flag(self) -> None:
        """
        C{--profile alloy} gives the service Alloy's timings, with the
        cluster name as the label (ckit's C{Label: opts.ClusterName}).
        """
        self.assertEqual(PROFILES["alloy"], GossipConfig.alloy)
        self.assertEqual(profile("alloy"), GossipConfig.alloy())
        options = ClusterNodeOptions()
        options.parseOptions(["--profile", "alloy", "--cluster-name", "prod"])
        config = options.cluster_options.gossip_config()
        self.assertEqual(
            (config.probe_interval, config.probe_timeout, config.tcp_timeout),
            (5.0, 2.0, 2.0),
        )
        self.assertEqual(config.label, "prod")
        error = self.assertRaises(ValueError, profile, "ckit")
        self.assertIn("alloy", str(error))


class BoundsTableTests(SynchronousTestCase):
    """
    The generated table of C{docs/profiles.md}.
    """

    def test_page_is_rendered_from_the_code(self) -> None:
        """
        The text between the markers is what C{docs/generate_profiles.py}
        renders from L{PROFILES} and L{cluster.gossip.suspicion}: rewriting
        the page changes nothing.
        """
        generator = load_generator()
        page = (checkout() / "docs" / "profiles.md").read_text()
        expected = generator.rewritten(page)
        if page != expected:
            diff = difflib.unified_diff(
                page.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                "docs/profiles.md",
                "the code",
            )
            self.fail(
                f"docs/profiles.md's table is stale; run: {generator.COMMAND}\n"
                + "".join(diff)
            )

    def test_markers_are_required(self) -> None:
        """
        A page without the markers is an error, not a page left alone.
        """
        generator = load_generator()
        self.assertRaises(ValueError, generator.rewritten, "# Profiles\n")

    def test_every_profile_has_a_row(self) -> None:
        """
        One row per profile, each with its worst case at three members.
        """
        table = load_generator().bounds_table()
        for name, preset in PROFILES.items():
            (row,) = [line for line in table.splitlines() if f"| `{name}` |" in line]
            self.assertIn(f"| {worst_case_detection(preset(), 3):.1f} s |", row)

    def test_suspicion_range(self) -> None:
        """
        A range where confirmations are expected; the minimum alone where
        the cluster is too small for one (LAN at three members).
        """
        generator = load_generator()
        self.assertEqual(generator.suspicion_range(GossipConfig.lan(), 3), "4 s")
        self.assertEqual(
            generator.suspicion_range(GossipConfig.alloy(), 10), "20 - 120 s"
        )

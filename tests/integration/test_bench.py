"""
Smoke tests of the benchmark scripts in C{bench/}: each runs in a quick
mode and must finish and print its table, so that the scripts cannot rot.
Nothing here asserts a timing.  The harness they share (C{bench._harness})
is tested in-process in L{tests.unit.test_bench}; its process runner here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from types import ModuleType
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from bench import _harness as harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_script(name: str, *args: str, timeout: float = 300) -> str:
    """
    Run C{bench/name} with C{args}; its standard output.
    """
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"{name} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


class SimulateTests(SynchronousTestCase):
    def test_quick_run(self) -> None:
        printed, result = json_run(
            self,
            "simulate.py",
            *("--nodes", "200", "--seconds", "20", "--kills", "1"),
            *("--settle", "5"),
        )
        self.assertEqual(result["nodes"], 200)
        self.assertEqual(result["kills"], 1)
        self.assertEqual(result["false_deaths"], 0)
        self.assertIsNotNone(result["detection_p50_s"])
        self.assertGreater(result["bytes_per_node_per_s"], 0)
        for key in result:
            self.assertIn(key, printed)

    def test_bad_flag(self) -> None:
        status, last_line = refusal("simulate.py", "--nodes", "2")
        self.assertEqual(status, 2)
        self.assertIn("--nodes", last_line)


def json_run(test: SynchronousTestCase, name: str, *args: str) -> tuple[str, Any]:
    """
    Run C{bench/name} with C{args} and C{--json}; its standard output and
    the JSON it wrote.
    """
    out = os.path.abspath(test.mktemp())
    printed = run_script(name, *args, "--json", out)
    with open(out) as f:
        return printed, json.load(f)


def refusal(name: str, *args: str) -> tuple[int, str]:
    """
    Run C{bench/name} with C{args}; its exit status and the last line of
    its standard error.
    """
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", name), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stderr.strip().splitlines()[-1]


def load_script(name: str) -> ModuleType:
    """
    Import C{bench/name} (the directory is not a package).
    """
    spec = importlib.util.spec_from_file_location(
        name.removesuffix(".py"), os.path.join(ROOT, "bench", name)
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class VsSerfTests(SynchronousTestCase):
    """
    C{bench/vs_serf.py} in quick mode: 5 of our nodes and 5 serf agents.
    """

    # 20 s of idle window: serf's byte counters come in whole 10 s
    # intervals, and a window that short still holds one.
    NODES, KILLS, IDLE = 5, 1, 20

    def test_quick_run(self) -> None:
        if shutil.which("serf") is None:
            raise SkipTest("serf is not on PATH (Debian: apt install serf)")
        vs_serf = load_script("vs_serf.py")
        # Every step at the worst case of the LAN configuration, on both
        # sides: the script fails first, and says why.
        bounds = vs_serf.Bounds.for_run(self.NODES, self.KILLS)
        timeout = bounds.whole_run(self.KILLS, self.IDLE) + 60
        out = os.path.abspath(self.mktemp())
        process = subprocess.Popen(
            [
                sys.executable,
                os.path.join(ROOT, "bench", "vs_serf.py"),
                *("--nodes", str(self.NODES), "--kills", str(self.KILLS)),
                *("--idle-seconds", str(self.IDLE), "--json", out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            printed, progress = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGTERM: the script kills every process it started.
            process.terminate()
            printed, progress = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 0, progress)
        with open(out) as f:
            result = json.load(f)
        self.assertEqual(result["nodes"], self.NODES)
        self.assertEqual(result["kills"], self.KILLS)
        self.assertEqual(set(result["metrics"]), {key for key, _ in vs_serf.METRICS})
        for key, row in result["metrics"].items():
            self.assertIsNotNone(row["ours"], key)
            self.assertIsNotNone(row["serf"], key)
            self.assertIn(row["label"], printed)
        self.assertEqual(result["metrics"]["false_deaths"]["ours"], 0, progress)
        # Counted for serf too, but not asserted: with both cores busy a serf
        # agent that leaves seconds after joining is sometimes listed failed
        # by another (serf's behaviour, not ours).
        self.assertGreaterEqual(result["metrics"]["false_deaths"]["serf"], 0)
        self.assertEqual(len(result["samples_s"]["detection"]["ours"]), self.KILLS)
        self.assertEqual(len(result["samples_s"]["join"]["serf"]), self.KILLS + 1)
        self.assertIn("targets:", printed)

    def test_bad_flag(self) -> None:
        status, last_line = refusal("vs_serf.py", "--kills", "0")
        self.assertEqual(status, 2)
        self.assertIn("--kills", last_line)


class LookupAndJoinBlockTests(SynchronousTestCase):
    def test_lookup_quick_run(self) -> None:
        printed, result = json_run(
            self, "lookup.py", "--keys", "2000", "--single-keys", "500", "--joins", "1"
        )
        rows = result["rows"]
        self.assertEqual([row["nodes"] for row in rows], [10, 100, 1000])
        for row in rows:
            self.assertGreater(row["batch_n1_per_s"], 0)
            self.assertGreater(row["bisect_loop_per_s"], 0)
        self.assertIn("bisect loop/s", printed)

    def test_join_block_quick_run(self) -> None:
        printed, result = json_run(self, "join_block.py", "--members", "50")
        self.assertEqual(result["members"], 50)
        self.assertGreaterEqual(result["longest_block_ms"], 0)
        self.assertIn("longest_block_ms", printed)


class StreamBufferTests(SynchronousTestCase):
    def test_quick_run(self) -> None:
        printed = run_script("stream_buffer.py", "--sizes", "0.2,0.4", "--budget", "30")
        rows = [line.split() for line in printed.splitlines()[2:]]
        self.assertEqual(len(rows), 2)
        for row in rows:
            self.assertGreater(float(row[0]), 0)
            self.assertGreaterEqual(float(row[1]), 0)


class SoakTests(SynchronousTestCase):
    def test_quick_run(self) -> None:
        printed, result = json_run(
            self,
            "soak.py",
            *("--nodes", "4", "--minutes", "0.2", "--kills", "1", "--batch", "2"),
        )
        self.assertIsNone(result["failure"])
        self.assertEqual(result["nodes"], 4)
        self.assertEqual(len(result["kills"]), 1)
        self.assertIsNotNone(result["kills"][0]["detected_after_s"])
        for row in result["rows"]:
            self.assertIn(row["metric"], printed)

    def test_bad_flag(self) -> None:
        status, last_line = refusal("soak.py", "--nodes", "3", "--kills", "1")
        self.assertEqual(status, 2)
        self.assertIn("--kills", last_line)


class StarveTests(SynchronousTestCase):
    def test_quick_run(self) -> None:
        args = ["--blocks", "0.5", "--cycles", "1", "--nodes", "3"]
        printed, result = json_run(self, "starve.py", *args)
        self.assertEqual(result["nodes"], 3)
        [row] = result["rows"]
        self.assertEqual((row["block_s"], row["blocks"]), (0.5, 1))
        self.assertIn("block s | every s", printed)
        self.assertIn("healthy nodes declared dead: ", printed)


class HarnessProcessesTests(TestCase):
    """
    L{harness.Processes} with real child processes (plain interpreters).
    """

    timeout = 60

    def python(self, name: str, code: str) -> harness.Child:
        return harness.Child(name, [sys.executable, "-c", code])

    async def test_an_unexpected_exit_fails_the_run(self) -> None:
        processes = harness.Processes(cast(IReactorTime, reactor))
        child = processes.start(self.python("early", "raise SystemExit(3)"))
        self.assertEqual(await child.ended, 3)
        with self.assertRaisesRegex(harness.RunFailed, "early exited unexpectedly"):
            processes.check()

    async def test_an_expected_exit_does_not(self) -> None:
        processes = harness.Processes(cast(IReactorTime, reactor))
        child = processes.start(self.python("victim", "import time; time.sleep(60)"))
        processes.expect_exit(child)
        child.signal("KILL")
        self.assertEqual(await child.ended, -9)
        processes.check()

    async def test_stop_all_kills_what_outlives_the_grace(self) -> None:
        processes = harness.Processes(cast(IReactorTime, reactor))
        stubborn = processes.start(
            self.python(
                "stubborn",
                "import signal, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)",
            )
        )
        polite = processes.start(self.python("polite", "import time; time.sleep(60)"))
        started = await harness.wait_until(
            cast(IReactorTime, reactor), lambda: "ready" in stubborn.output, 30, 0.05
        )
        self.assertTrue(started)
        stopped = await processes.stop_all(grace=0.5)
        self.assertEqual(stopped.killed, 1)
        self.assertEqual((await polite.ended, await stubborn.ended), (-15, -9))
        self.assertEqual(processes.running(), [])
        processes.check()  # stopping is no failure

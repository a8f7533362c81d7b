"""
Every program in C{README.md} and C{docs/*.md} runs here, as a reader
would paste it (L{tests.docblocks} reads the blocks; C{docs/testing.md}
says the same in prose).

  - A shell block runs with C{bash -eu -o pipefail}, in a copy of the
    checkout of its own and in a session of its own (its background jobs
    are a process group we can end).  Its C{PATH} gives C{python3} and
    C{pip} of a throwaway virtualenv that sees this interpreter's packages
    through a C{.pth} file, the project's console scripts (as C{pip
    install .} writes them) and C{twistd}; C{PYTHONPATH} is the copy, so
    every command runs the working tree's code.  C{pip install .} runs for
    real, offline (C{PIP_NO_INDEX}, no build isolation), into the
    throwaway virtualenv.  The block must exit 0, print no traceback,
    leave no process running, and print every line of the C{text} block
    after it.  Its fixed ports are used as written; only if one is taken
    on this machine are they all swapped for free ones (logged).
  - A Python block runs as a script in an empty directory with the same
    environment: exit 0, no traceback, the lines of its C{text} block.
  - The README's first block: its install-and-demo line runs until the
    demo prints the table that "The demo" shows, then gets Ctrl-C (SIGINT
    to its process group, as a terminal sends it); its test-suite lines
    run with trial's C{--dry-run}, which loads every test and runs none
    (C{.ci/run} runs the suite for real).
  - The blocks of L{NOT_RUN} are parsed: C{bash -n} or C{compile()}.

Bounds are the worst case of what a block starts (a cold interpreter per
node on a loaded machine, a wheel built offline, the documented stop); the
times taken are logged.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import attrs
from twisted.internet import reactor
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from cluster.daemon.demo import ProcessExit
from cluster.daemon.ports import free_loopback_port
from tests.docblocks import (
    NOT_RUN,
    PYTHON,
    ROOT,
    SHELL,
    Block,
    documented_blocks,
    missing_lines,
    programs,
    substitute_ports,
)
from tests.helpers import now, wait_for
from tests.processes import STARTUP

_log = Logger()

# pip building this project's wheel offline and installing it (about 10 s
# here), on a loaded machine.
INSTALL = 120.0
# A graceful stop: terminating (bounded at 5 s), then the leave (5 s).
STOP = 10.0
# The most a block does one after the other: an install, three nodes
# started (each waited for), their stop.
SHELL_BOUND = INSTALL + 3 * STARTUP + 2 * STOP
PYTHON_BOUND = STARTUP + 2 * STOP
TRIAL_BOUND = INSTALL + STARTUP + 60.0  # trial imports every test module

# Commands of the machine, not of this project, that blocks use.
TOOLS = ("curl", "openssl")
# The README's first block starts the demo and names the test commands.
DEMO_COMMAND = "cluster.daemon.demo"
TRIAL_COMMAND = "-m twisted.trial "
DEMO_SECTION = "The demo"
# A fixed port in a block (what may be swapped for a free one).
_PORT = re.compile(r"(?:127\.0\.0\.1:|localhost:|tcp:|PORT=)(\d{2,5})(?!\d)")
# What differs at every run of the demo: its ports, and its process ids
# (a number standing alone).
_ANY_PORT = re.compile(r"127\.0\.0\.1:\d+")
_ANY_NUMBER = re.compile(r"(?<!\S)\d+(?!\S)")
_TRACEBACK = "Traceback (most recent call last)"
_PURELIB = "import sysconfig; print(sysconfig.get_path('purelib'))"
# Runs the rest of the command line as a session leader: the command and
# everything it starts form one process group, ended together.
_NEW_SESSION = "import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])"
# The wheel is built with this environment's setuptools (no build
# isolation, offline); without the wheel package, setuptools builds
# wheels itself only from 70.1 on.
_WHEEL_BUILDING_SETUPTOOLS = (70, 1)


@attrs.frozen
class Ran:
    """
    How a command ended.

    @ivar status: its exit status (negative: the signal that ended it).
    @ivar output: stdout and stderr, as they came.
    @ivar left: whether processes it started were still running after it.
    @ivar took: seconds from start to end.
    """

    status: int
    output: str
    left: bool
    took: float

    def problems(self, expected: str | None = None) -> list[str]:
        """
        What is wrong with this run of a documented program: not exit 0,
        a traceback, processes left running, lines of C{expected} missing.
        """
        found = []
        if self.status != 0:
            found.append(f"exit status {self.status}")
        if _TRACEBACK in self.output:
            found.append("a traceback")
        if self.left:
            found.append("processes left running")
        if expected is not None:
            found.extend(
                f"no line like: {line}" for line in missing_lines(expected, self.output)
            )
        return found


class _Leader(ProcessExit):
    """
    L{ProcessExit} that also notes when the process itself exited (its
    pipes may stay open, held by what it left running).
    """

    def __init__(self) -> None:
        super().__init__()
        self.exited = False

    def processExited(self, reason: Failure) -> None:
        self.exited = True


@attrs.define(eq=False)
class Session:
    """
    One command run as the leader of a new session, so that it and all it
    starts form one process group.
    """

    argv: Sequence[str]
    cwd: Path
    env: dict[str, str]
    protocol: _Leader = attrs.field(factory=_Leader, init=False)
    pid: int = attrs.field(default=0, init=False)
    began: float = attrs.field(default=0.0, init=False)

    def start(self) -> None:
        argv = [sys.executable, "-c", _NEW_SESSION, *self.argv]
        process = IReactorProcess(reactor).spawnProcess(
            self.protocol, sys.executable, argv, env=self.env, path=str(self.cwd)
        )
        self.pid = process.pid
        self.began = now()

    @property
    def output(self) -> str:
        return self.protocol.output.decode("utf-8", "replace")

    def signal_group(self, number: int) -> bool:
        """
        Send signal C{number} to the group (0: only check it), while its
        leader runs or right after it ended: the group's id stays ours
        while a process of the group is left, and is not handed out again
        until the kernel's process ids wrap around.

        @return: whether any process of the group was there to get it.
        """
        if self.pid <= 0:  # never started: 0 would be our own group
            return False
        try:
            os.killpg(self.pid, number)
        except ProcessLookupError:
            return False
        return True

    async def stop(self) -> None:
        """
        Kill the whole group while the command runs, and wait for it to
        end.  (Once it has ended, L{ended} has killed what it left: later,
        its group id may be another's.)
        """
        if not self.protocol.ended.called:
            self.signal_group(signal.SIGKILL)
            await self.protocol.ended

    async def ended(self, bound: float, what: str) -> Ran:
        """
        Wait for the command to end, at most C{bound} seconds, then kill
        what it left running.

        @raise AssertionError: when it did not end, with its output.
        """
        try:
            await wait_for(lambda: self.protocol.exited, bound, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; its output:\n{self.output[-4000:]}") from None
        took = now() - self.began
        left = self.signal_group(0)
        if left:
            self.signal_group(signal.SIGKILL)
        # Its pipes close once nothing of the group holds them.
        status = await self.protocol.ended
        return Ran(status, self.output, left, took)


def checkout_copy(target: Path) -> Path:
    """
    A copy of the working tree at C{target}, without version control,
    build output and caches.
    """
    shutil.copytree(
        ROOT,
        target,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git",
            ".tox",
            ".ci-venv",
            ".venv",
            "build",
            "dist",
            "*.egg-info",
            "_trial_temp*",
            ".mypy_cache",
            ".ruff_cache",
            ".hypothesis",
            "__pycache__",
        ),
    )
    return target


def console_scripts() -> dict[str, str]:
    """
    The console scripts C{setup.cfg} declares: name to C{module:function}.
    """
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    declared = config.get("options.entry_points", "console_scripts", fallback="")
    scripts = {}
    for line in declared.splitlines():
        if "=" in line:
            name, target = (part.strip() for part in line.split("=", 1))
            scripts[name] = target
    return scripts


def wheel_builder_missing() -> str | None:
    """
    Why C{pip install .} cannot build this project offline here, or
    C{None} when it can.
    """
    try:
        version("wheel")
        return None
    except PackageNotFoundError:
        pass
    try:
        have = version("setuptools")
    except PackageNotFoundError:
        have = "none"
    numbers = tuple(int(n) for n in re.findall(r"\d+", have)[:2])
    if numbers >= _WHEEL_BUILDING_SETUPTOOLS:
        return None
    return (
        f"building the wheel offline needs setuptools >= 70.1 or the wheel "
        f"package (the test extra); this environment has setuptools {have}"
    )


def port_free(port: int) -> bool:
    """
    Whether a node could bind C{port} on 127.0.0.1 for TCP (as Twisted
    listens, with C{SO_REUSEADDR}) and UDP.
    """
    tcp = socket.socket()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", port))
        udp.bind(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        tcp.close()
        udp.close()
    return True


def ports_to_swap(script: str) -> list[tuple[int, int]]:
    """
    The fixed ports of C{script}, each with the port to use instead:
    none when all are free, else a free one for each.
    """
    ports = sorted({int(port) for port in _PORT.findall(script)})
    if all(port_free(port) for port in ports):
        return []
    return [(port, free_loopback_port()) for port in ports]


def masked(text: str) -> str:
    """
    C{text} with the ports and process ids of the demo's table as C{PORT}
    and C{N}.
    """
    return _ANY_NUMBER.sub("N", _ANY_PORT.sub("127.0.0.1:PORT", text))


def first_block() -> Block:
    """
    The README's first block: install and demo, the test commands.
    """
    return next(b for b in documented_blocks() if b.path == "README.md")


def demo_table() -> str:
    """
    The C{text} block of the README's section on the demo.
    """
    return next(
        b.text
        for b in documented_blocks()
        if b.path == "README.md" and b.heading == DEMO_SECTION
    )


def commands(block: Block) -> list[str]:
    """
    The command lines of a shell block (comment lines left out).
    """
    return [
        line
        for line in block.script.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def not_run(block: Block) -> bool:
    """
    Whether C{block} is one of L{NOT_RUN}.
    """
    return any(page == block.path and phrase in block.text for page, phrase in NOT_RUN)


class DocumentedProgramTests(TestCase):
    """
    The programs of the README and of C{docs/}, run.
    """

    timeout = 1800

    def setUp(self) -> None:
        self.place = Path(self.mktemp()).absolute()
        self.place.mkdir(parents=True)
        self.venv = self.place / "venv"
        self._make_venv()

    def _make_venv(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(self.venv)],
            check=True,
        )
        python = self.venv / "bin" / "python"
        purelib = subprocess.run(
            [str(python), "-c", _PURELIB],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        ours = [
            path
            for path in sys.path
            if os.path.basename(path) in ("site-packages", "dist-packages")
        ]
        (Path(purelib) / "tested_environment.pth").write_text(
            "".join(f"{path}\n" for path in ours)
        )
        for name, target in console_scripts().items():
            module, function = target.split(":")
            script = self.venv / "bin" / name
            script.write_text(
                f"#!{python}\nimport sys\nimport {module}\n"
                f"sys.exit({module}.{function.strip()}())\n"
            )
            script.chmod(0o755)

    def environment(self, code: Path) -> dict[str, str]:
        """
        The environment of a documented program that runs the code at
        C{code}.
        """
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        env.update(
            PATH=os.pathsep.join(
                [
                    str(self.venv / "bin"),
                    os.path.dirname(sys.executable),
                    env.get("PATH", "/usr/bin:/bin"),
                ]
            ),
            VIRTUAL_ENV=str(self.venv),
            PYTHONPATH=str(code),
            PIP_NO_INDEX="1",
            # pip reads the variable of a --no-* flag the other way round:
            # 0 means --no-build-isolation.
            PIP_NO_BUILD_ISOLATION="0",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PIP_NO_INPUT="1",
        )
        return env

    def session(self, argv: Sequence[str], cwd: Path, env: dict[str, str]) -> Session:
        """
        Start C{argv} in a session of its own, whose process group is
        killed when the test ends.
        """
        started = Session(argv, cwd, env)
        started.start()
        self.addCleanup(started.stop)
        return started

    def sandbox(self, name: str) -> Path:
        """
        A fresh copy of the checkout, for one program.
        """
        return checkout_copy(self.place / name)

    async def run_shell(self, block: Block, script: str, name: str) -> Ran:
        copy = self.sandbox(name)
        path = self.place / f"{name}.sh"
        path.write_text(script)
        started = self.session(
            ["bash", "-eu", "-o", "pipefail", str(path)], copy, self.environment(copy)
        )
        return await started.ended(SHELL_BOUND, f"{block.where} ends")

    def report(self, failures: list[str], skips: list[str]) -> None:
        if failures:
            self.fail("\n\n".join(failures))
        if skips:
            raise SkipTest("; ".join(skips))

    async def test_shell_blocks(self) -> None:
        """
        Every shell block but the README's first, as pasted (fixed ports
        swapped only if taken here).
        """
        first = first_block()
        blocks = [
            b
            for b in programs(documented_blocks())
            if b.language in SHELL and b != first and not not_run(b)
        ]
        self.assertTrue(blocks, "no shell blocks found")
        cannot_install = wheel_builder_missing()
        failures, skips = [], []
        for index, block in enumerate(blocks):
            if cannot_install and "pip install" in block.script:
                skips.append(f"{block.where}: {cannot_install}")
                continue
            absent = [
                tool
                for tool in TOOLS
                if re.search(rf"(?<![\w./-]){tool}\b", block.script)
                and shutil.which(tool) is None
            ]
            if absent:
                skips.append(f"{block.where}: needs {', '.join(absent)}")
                continue
            swap = ports_to_swap(block.script)
            if swap:
                _log.warn(
                    "{where}: its ports are taken here; running with {swap}",
                    where=block.where,
                    swap=swap,
                )
            ran = await self.run_shell(
                block, substitute_ports(block.script, swap), f"shell-{index}"
            )
            expected = block.expected
            if expected is not None:
                expected = substitute_ports(expected, swap)
            problems = ran.problems(expected)
            if problems:
                failures.append(
                    f"{block.where} ({block.heading}): {'; '.join(problems)}\n"
                    f"{ran.output[-3000:]}"
                )
        self.report(failures, skips)

    async def test_python_blocks(self) -> None:
        """
        Every Python program (a block, or blocks joined by the marker) runs
        as a script.
        """
        blocks = [
            b
            for b in programs(documented_blocks())
            if b.language in PYTHON and not not_run(b)
        ]
        self.assertTrue(blocks, "no Python blocks found")
        failures = []
        python = str(self.venv / "bin" / "python")
        for index, block in enumerate(blocks):
            empty = self.place / f"python-{index}"
            empty.mkdir()
            script = self.place / f"python-{index}.py"
            script.write_text(block.script)
            started = self.session([python, str(script)], empty, self.environment(ROOT))
            ran = await started.ended(PYTHON_BOUND, f"{block.where} ends")
            problems = ran.problems(block.expected)
            if problems:
                failures.append(
                    f"{block.where} ({block.heading}): {'; '.join(problems)}\n"
                    f"{ran.output[-3000:]}"
                )
        self.report(failures, [])

    def test_blocks_not_run_parse(self) -> None:
        """
        The few blocks that cannot run here are at least valid shell or
        Python.
        """
        found = [b for b in programs(documented_blocks()) if not_run(b)]
        self.assertEqual(len(found), len(NOT_RUN), [b.where for b in found])
        for block in found:
            if block.language in PYTHON:
                compile(block.script, block.where, "exec")
                continue
            parsed = subprocess.run(
                ["bash", "-n"], input=block.script, capture_output=True, text=True
            )
            self.assertEqual(parsed.returncode, 0, f"{block.where}: {parsed.stderr}")

    def test_first_block_is_all_run(self) -> None:
        """
        Each command of the README's first block is one the tests below
        run: the demo, or the test suite.
        """
        block = first_block()
        self.assertIn(block.language, SHELL)
        for line in commands(block):
            self.assertTrue(
                (DEMO_COMMAND in line) != (TRIAL_COMMAND in line),
                f"README.md's first block: no test runs {line!r}",
            )

    async def test_first_block_installs_and_runs_the_demo(self) -> None:
        """
        The install-and-demo line, verbatim: the wheel is built and
        installed, the demo prints the table the README shows, and Ctrl-C
        stops it and every node.
        """
        reason = wheel_builder_missing()
        if reason:
            raise SkipTest(reason)
        (line,) = [c for c in commands(first_block()) if DEMO_COMMAND in c]
        copy = self.sandbox("demo")
        path = self.place / "demo.sh"
        path.write_text(line + "\n")
        started = self.session(
            ["bash", "-eu", "-o", "pipefail", str(path)], copy, self.environment(copy)
        )
        table = masked(demo_table())

        def shown_or_ended() -> bool:
            if started.protocol.ended.called:
                return True
            return not missing_lines(table, masked(started.output))

        try:
            await wait_for(
                shown_or_ended, INSTALL + 2 * STARTUP, "the demo shows its table"
            )
        except AssertionError as e:
            missing = missing_lines(table, masked(started.output))
            raise AssertionError(
                f"{e}; missing: {missing}\n{started.output[-4000:]}"
            ) from None
        if started.protocol.ended.called:
            ran = await started.ended(0, "the demo ended")
            self.fail(f"the demo ended ({ran.status}):\n{ran.output[-4000:]}")
        interrupted = now()
        started.signal_group(signal.SIGINT)
        ran = await started.ended(2 * STOP, "the demo stops on Ctrl-C")
        _log.info(
            "install and demo table: {table:.1f} s; Ctrl-C to exit: {stop:.1f} s",
            table=interrupted - started.began,
            stop=now() - interrupted,
        )
        self.assertIn(ran.status, (0, -signal.SIGINT), ran.output[-3000:])
        self.assertNotIn(_TRACEBACK, ran.output)
        self.assertFalse(ran.left, "the demo left processes running")

    async def test_first_block_test_commands_load_the_suite(self) -> None:
        """
        The test-suite lines, with trial's C{--dry-run}: their installs run,
        and trial loads every test they name.
        """
        reason = wheel_builder_missing()
        if reason:
            raise SkipTest(reason)
        lines = [c for c in commands(first_block()) if TRIAL_COMMAND in c]
        self.assertTrue(lines, "the README names no test command")
        for index, line in enumerate(lines):
            self.assertEqual(line.count(TRIAL_COMMAND), 1, line)
            dry = line.replace(TRIAL_COMMAND, TRIAL_COMMAND + "--dry-run ")
            copy = self.sandbox(f"trial-{index}")
            path = self.place / f"trial-{index}.sh"
            path.write_text(dry + "\n")
            started = self.session(
                ["bash", "-eu", "-o", "pipefail", str(path)],
                copy,
                self.environment(copy),
            )
            ran = await started.ended(TRIAL_BOUND, f"{dry!r} ends")
            self.assertEqual(ran.problems(), [], f"{dry}\n{ran.output[-3000:]}")
            counted = re.findall(r"^Ran (\d+) tests?", ran.output, re.MULTILINE)
            self.assertTrue(counted and int(counted[-1]) > 0, ran.output[-3000:])
            self.assertIn("PASSED", ran.output)
            _log.info(
                "{line}: {count} tests load in {took:.1f} s",
                line=dry,
                count=counted[-1],
                took=ran.took,
            )

"""
Our memberlist node against Debian's serf agent (Go memberlist 0.2.2) on
this machine: N processes of each on loopback, joined through the first.

Prints, for each: time until every node lists N alive after the joins
start, then CPU use (per node, averaged over an idle period) and resident
memory per node, and the ratio ours / serf.  Run: C{python bench/vs_serf.py
[N] [IDLE_SECONDS]}.  Needs C{serf} on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from cluster.gossip.transport import free_loopback_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(procs: list[subprocess.Popen[bytes]], idle: float) -> tuple[float, float]:
    before = [cpu_seconds(p.pid) for p in procs]
    time.sleep(idle)
    after = [cpu_seconds(p.pid) for p in procs]
    cpu = sum(a - b for a, b in zip(after, before, strict=True)) / len(procs) / idle
    rss = sum(rss_mib(p.pid) for p in procs) / len(procs)
    return cpu * 100, rss


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """
    Kill the processes we started, by PID, and reap them.
    """
    for p in procs:
        p.kill()
        p.wait()


def run_serf(n: int, idle: float) -> tuple[float, float, float]:
    serf = shutil.which("serf")
    assert serf is not None
    ports = [(free_loopback_port(), free_loopback_port()) for _ in range(n)]
    procs = [
        subprocess.Popen(
            [
                serf,
                "agent",
                f"-node=s{i}",
                f"-bind=127.0.0.1:{p}",
                f"-rpc-addr=127.0.0.1:{r}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, (p, r) in enumerate(ports)
    ]
    try:
        time.sleep(1.5)
        start = time.time()
        # One RPC: the seed agent joins every other agent.
        subprocess.run(
            [serf, "join", f"-rpc-addr=127.0.0.1:{ports[0][1]}"]
            + [f"127.0.0.1:{port}" for port, _ in ports[1:]],
            check=True,
            stdout=subprocess.DEVNULL,
        )

        def everyone() -> bool:
            for _, rpc in ports:
                out = subprocess.run(
                    [
                        serf,
                        "members",
                        f"-rpc-addr=127.0.0.1:{rpc}",
                        "-format=json",
                        "-status=alive",
                    ],
                    capture_output=True,
                    text=True,
                ).stdout
                if len(json.loads(out)["members"]) != n:
                    return False
            return True

        while not everyone():
            time.sleep(0.01)
        converged = time.time() - start
        cpu, rss = measure(procs, idle)
        return converged, cpu, rss
    finally:
        stop(procs)


def run_ours(n: int, idle: float) -> tuple[float, float, float]:
    ports = [free_loopback_port() for _ in range(n)]
    script = os.path.join(HERE, "gossip_node.py")
    go_file = os.path.join(tempfile.mkdtemp(), "go")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, port in enumerate(ports):
            seed = [str(ports[0])] if i else []
            command = [sys.executable, script, f"n{i}", str(port), str(n), go_file]
            procs.append(subprocess.Popen(command + seed, stdout=subprocess.PIPE))
        for p in procs:
            assert p.stdout is not None
            p.stdout.readline()  # "ready": started and bound
        start = time.time()
        open(go_file, "w").close()
        # Each prints the wall time it first saw everyone alive.
        times = []
        for p in procs:
            assert p.stdout is not None
            times.append(float(p.stdout.readline().split()[1]))
        converged = max(times) - start
        cpu, rss = measure(procs, idle)
        return converged, cpu, rss
    finally:
        stop(procs)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    idle = float(sys.argv[2]) if len(sys.argv) > 2 else 15.0
    serf = run_serf(n, idle)
    ours = run_ours(n, idle)
    print(f"{n} nodes on loopback, LAN profile, idle period {idle:.0f} s")
    print(f"{'':24} {'serf (Go)':>12} {'ours':>12} {'ours/serf':>10}")
    rows = [
        ("join to all-alive, s", 0),
        ("CPU per node, %", 1),
        ("RSS per node, MiB", 2),
    ]
    for label, index in rows:
        ratio = ours[index] / serf[index] if serf[index] else float("inf")
        print(f"{label:24} {serf[index]:12.3f} {ours[index]:12.3f} {ratio:10.2f}")
    print(
        "(serf: one `serf join` RPC on the seed, observed by polling `serf "
        "members`, whose RPC round trips count against it; ours: every node "
        "joins the seed and reports the moment it lists everyone.)"
    )


if __name__ == "__main__":
    main()

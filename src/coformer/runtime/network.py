"""Where the device processes talk: the loopback, or real slow links between network namespaces.

A shaped network is a star like the fleet's: rank 0 (where requests arrive, the aggregator) in a
hub namespace, every other rank in its own namespace joined to the hub by a veth pair whose two
ends are rate-limited with ``tc ... tbf`` (token bucket; ``netem`` and its added delay are not
available here). Traffic between two other ranks is routed through the hub, over two shaped hops.
Namespaces are named ``cfev<pid>-<rank>`` and always deleted (which deletes their veths too);
ones left by a process that died without cleaning up are swept at the next start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field

PREFIX = "cfev"
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")  # where ip, tc and sysctl live; a plain shell's PATH may leave them out


@dataclass
class Network:
    master_addr: str  # rank 0's address: the rendezvous of the gloo group
    interfaces: list[str]  # GLOO_SOCKET_IFNAME per rank
    namespaces: list[str] = field(default_factory=list)  # namespace per rank (empty: the caller's own)
    rate_mbit: float | None = None  # None: unshaped loopback

    def prefix(self, rank: int) -> list[str]:
        """Command prefix that starts a process of ``rank`` inside its namespace."""
        return [tool("ip"), "netns", "exec", self.namespaces[rank]] if self.namespaces else []

    @property
    def label(self) -> str:
        return "loopback" if self.rate_mbit is None else f"{self.rate_mbit:g} Mbit/s"


def loopback(ranks: int) -> Network:
    return Network("127.0.0.1", ["lo"] * ranks)


def tool(name: str) -> str:
    """A system tool's absolute path, looked up on PATH and then in the sbin folders (the bare name
    where it is nowhere: running it then fails, and ``shaping_unavailable`` has said why)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SYSTEM_DIRS])) or name


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([tool("ip"), *args], check=check, capture_output=True, text=True)


def shaping_unavailable() -> str | None:
    """None when namespaces, veths and tbf can be used here, else why not (one line)."""
    if os.geteuid() != 0:
        return "not root: network namespaces and tc need CAP_NET_ADMIN"
    missing = [name for name in ("ip", "tc") if not os.path.isabs(tool(name))]
    if missing:
        return f"no {' or '.join(missing)} command (iproute2) on this machine"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
    except subprocess.CalledProcessError as e:
        return f"`ip netns add` is not permitted here ({e.stderr.strip()})"
    finally:
        ip("netns", "del", probe, check=False)
    return None


def sweep_stale() -> None:
    """Delete namespaces of ours whose creating process is gone (it was killed before its finally)."""
    for name in ip("netns", "list", check=False).stdout.split():
        pid = name.removeprefix(PREFIX).split("-")[0]
        if name.startswith(PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            ip("netns", "del", name, check=False)


def owned_namespaces(pid: int | None = None) -> list[str]:
    """Namespaces this process (or ``pid``) created and has not deleted yet."""
    tag = f"{PREFIX}{pid or os.getpid()}-"
    return [name for name in ip("netns", "list", check=False).stdout.split() if name.startswith(tag)]


@contextmanager
def shaped(ranks: int, rate_mbit: float, burst_kb: int = 32):
    """A star of ``ranks`` namespaces around rank 0's, every veth end limited to ``rate_mbit``."""
    sweep_stale()
    tag = f"{PREFIX}{os.getpid()}"
    namespaces = [f"{tag}-{r}" for r in range(ranks)]
    rate = ["tbf", "rate", f"{rate_mbit:g}mbit", "burst", f"{burst_kb}kb", "latency", "50ms"]
    try:
        for ns in namespaces:
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for r in range(1, ranks):
            hub, spoke = f"{tag}h{r}", f"{tag}s{r}"  # at most 15 characters
            ip("link", "add", hub, "netns", namespaces[0], "type", "veth", "peer", "name", spoke, "netns", namespaces[r])
            for ns, dev, addr in ((namespaces[0], hub, f"10.77.{r}.1/24"), (namespaces[r], spoke, f"10.77.{r}.2/24")):
                ip("-n", ns, "addr", "add", addr, "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")
                ip("netns", "exec", ns, tool("tc"), "qdisc", "add", "dev", dev, "root", *rate)
            ip("-n", namespaces[r], "route", "add", "default", "via", f"10.77.{r}.1")
        if ranks > 2:  # ranks other than 0 reach each other through the hub
            ip("netns", "exec", namespaces[0], tool("sysctl"), "-qw", "net.ipv4.ip_forward=1")
        interfaces = [f"{tag}h1" if ranks > 1 else "lo"] + [f"{tag}s{r}" for r in range(1, ranks)]
        yield Network("10.77.1.1" if ranks > 1 else "127.0.0.1", interfaces, namespaces, rate_mbit)
    finally:
        for ns in namespaces:
            ip("netns", "del", ns, check=False)

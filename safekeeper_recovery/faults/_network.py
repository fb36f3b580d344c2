"""The campaign's network: a namespace per node and one for the proposer, joined by veth
pairs to a bridge in a hub namespace of its own, plus one veth from the caller's namespace
into the bridge for the observer (the harness's HTTP client).

Every name carries the run's tag (``skf<tag>…``) and every address is in one /24 that no
route of the caller's namespace uses yet and no other live network of this harness has
reserved (rule N6); nothing else on the machine is touched. Faults are
nftables rules (tables ``inet skf`` in the node namespaces, never matching the observer's
address: rule N5) and a root qdisc on a namespace's ``eth0``. :meth:`close` removes it all
and may be called any number of times, also after a failed :meth:`create`.

N6  Two networks never share a subnet, also when built at the same moment by two processes
    (two campaigns side by side): a subnet is reserved by a file under ``RESERVATIONS``,
    chosen and written under an exclusive lock, before its route exists, and released by
    :meth:`Network.close`; a reservation whose process is gone is stale and reused.
    (Choosing by routes alone raced: the route appears only once the network is built, so
    two campaigns once took the same /24, and the harness's HTTP requests went to the
    other campaign's nodes.)

Commands run synchronously (each takes milliseconds); async callers use
``trio.to_thread.run_sync``. Needs root, ``ip`` (iproute2), ``nft`` and ``tc``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

__all__ = ["RESERVATIONS", "Network", "unavailable_reason"]

RESERVATIONS: Final = Path("/run/safekeeper-recovery-faults")
"""One file per reserved subnet, holding the reserving process's pid (rule N6)."""

_NFT_TABLE: Final = """
table inet skf {
    chain input { type filter hook input priority 0; policy accept; }
    chain output { type filter hook output priority 0; policy accept; }
}
"""


def unavailable_reason() -> str | None:
    """Why this machine cannot run the campaign (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "nft", "tc") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install iproute2 nftables)"
    probe = f"skfprobe{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "`ip netns add` fails here (no network-namespace support)"
    try:
        r = subprocess.run(["ip", "netns", "exec", probe, "nft", "-f", "-"], input=_NFT_TABLE,
                           capture_output=True, text=True)
        if r.returncode != 0:
            return f"nftables does not work in a namespace: {r.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Network:
    """Members 0 (the proposer) .. n (the nodes), each in its own namespace."""

    def __init__(self, tag: str, nodes: int) -> None:
        self.tag = tag
        self.members = list(range(nodes + 1))
        self.subnet = _reserve_subnet()
        self.has_netem = False
        self.commands: list[str] = []
        self._created: list[str] = []

    def namespace(self, member: int) -> str:
        return f"skf{self.tag}-{'p' if member == 0 else f'n{member}'}"

    def address(self, member: int) -> str:
        return f"{self.subnet}.{10 + member}"

    @property
    def observer(self) -> str:
        return f"{self.subnet}.254"

    @property
    def _hub(self) -> str:
        return f"skf{self.tag}-hub"

    @property
    def _observer_link(self) -> str:
        return f"skf{self.tag}o"

    def create(self) -> None:
        """Build namespaces, bridge, links and empty rule tables; CalledProcessError if a
        command fails (call :meth:`close` then)."""
        hub = self._hub
        self._netns_add(hub)
        self._run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        self._run("ip", "-n", hub, "link", "set", "br0", "up")
        for m in self.members:
            ns = self.namespace(m)
            self._netns_add(ns)
            hub_end = f"skf{self.tag}h{m}"
            self._run("ip", "link", "add", hub_end, "netns", hub, "type", "veth",
                      "peer", "name", "eth0", "netns", ns)
            self._run("ip", "-n", hub, "link", "set", hub_end, "master", "br0", "up")
            self._run("ip", "-n", ns, "addr", "add", f"{self.address(m)}/24", "dev", "eth0")
            self._run("ip", "-n", ns, "link", "set", "eth0", "up")
            self._run("ip", "-n", ns, "link", "set", "lo", "up")
            self._run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=_NFT_TABLE)
        link = self._observer_link
        self._created.append(f"link:{link}")
        self._run("ip", "link", "add", link, "type", "veth", "peer", "name", f"{link}h",
                  "netns", hub)
        self._run("ip", "-n", hub, "link", "set", f"{link}h", "master", "br0", "up")
        self._run("ip", "addr", "add", f"{self.observer}/24", "dev", link)
        self._run("ip", "link", "set", link, "up")
        probe = ["ip", "netns", "exec", hub, "tc", "qdisc", "add", "dev", "lo", "root",
                 "netem", "delay", "1ms"]
        self.has_netem = subprocess.run(probe, capture_output=True).returncode == 0

    def wrap(self, member: int, argv: list[str]) -> list[str]:
        """``argv`` run inside ``member``'s namespace (``ip netns exec`` execs, so the
        process's pid is the command's own)."""
        return ["ip", "netns", "exec", self.namespace(member), *argv]

    def drop(self, receiver: int, sender: int) -> None:
        """``receiver`` drops every packet from ``sender`` (one way)."""
        self._nft(receiver, f"add rule inet skf input ip saddr {self.address(sender)} drop")

    def loss(self, member: int, percent: int) -> None:
        """``member`` loses ``percent`` % of its packets each way (the observer's excepted)."""
        lose = f"numgen random mod 100 < {percent} drop"
        self._nft(member, f"add rule inet skf input ip saddr != {self.observer} {lose}")
        self._nft(member, f"add rule inet skf output ip daddr != {self.observer} {lose}")

    def slow(self, member: int, kbit: int) -> None:
        """Delay, jitter and reorder ``member``'s outgoing packets where the kernel has
        netem; otherwise throttle them to ``kbit`` kbit/s (queueing delay, no reordering)."""
        if self.has_netem:
            delay = max(5, 200_000 // kbit)
            shape = ["netem", "delay", f"{delay}ms", f"{delay // 2}ms", "reorder", "25%", "50%"]
        else:
            shape = ["tbf", "rate", f"{kbit}kbit", "burst", "32kbit", "latency", "400ms"]
        self._run("ip", "netns", "exec", self.namespace(member), "tc", "qdisc", "replace",
                  "dev", "eth0", "root", *shape)

    def heal(self) -> None:
        """Remove every rule and qdisc the faults added."""
        for m in self.members:
            self._nft(m, "flush table inet skf")
            subprocess.run(["ip", "netns", "exec", self.namespace(m), "tc", "qdisc", "del",
                            "dev", "eth0", "root"], capture_output=True)

    def close(self) -> None:
        """Delete every namespace and link this network created (errors ignored)."""
        for item in reversed(self._created):
            kind, name = item.split(":", 1)
            cmd = ["ip", "netns", "del", name] if kind == "netns" else ["ip", "link", "del", name]
            subprocess.run(cmd, capture_output=True)
        self._created.clear()
        _release_subnet(self.subnet)

    def _nft(self, member: int, rule: str) -> None:
        self._run("ip", "netns", "exec", self.namespace(member), "nft", *rule.split())

    def _netns_add(self, name: str) -> None:
        self._run("ip", "netns", "add", name)
        self._created.append(f"netns:{name}")

    def _run(self, *argv: str, stdin: str | None = None) -> None:
        self.commands.append(" ".join(argv))
        r = subprocess.run(argv, input=stdin, capture_output=True, text=True)
        if r.returncode != 0:
            raise subprocess.CalledProcessError(r.returncode, argv, r.stdout, r.stderr)


def _reserve_subnet() -> str:
    """N6: ``10.213.X`` for the first X that no route of this namespace mentions and no live
    process has reserved; reserved for this process until :func:`_release_subnet`."""
    RESERVATIONS.mkdir(parents=True, exist_ok=True)
    with (RESERVATIONS / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"],
                                capture_output=True, text=True).stdout
        for x in range(1, 255):
            subnet = f"10.213.{x}"
            if f"{subnet}." in routes or _reserved_by_a_live_process(subnet):
                continue
            (RESERVATIONS / subnet).write_text(str(os.getpid()))
            return subnet
    raise RuntimeError("no free 10.213.X.0/24 subnet")


def _reserved_by_a_live_process(subnet: str) -> bool:
    try:
        pid = int((RESERVATIONS / subnet).read_text())
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return True  # another network of this process holds it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release_subnet(subnet: str) -> None:
    with contextlib.suppress(OSError):
        if (RESERVATIONS / subnet).read_text() == str(os.getpid()):
            (RESERVATIONS / subnet).unlink()

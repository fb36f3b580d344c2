"""The campaign's network: a namespace per node and one for the proposer, joined by veth
pairs to a bridge in a hub namespace of its own, plus one veth from the caller's namespace
into the bridge for the observer (the harness's HTTP client).

Every name carries the run's tag (``skf<tag>…``) and every address is in one /24 that no
route of the caller's namespace uses yet; nothing else on the machine is touched. Faults are
nftables rules (tables ``inet skf`` in the node namespaces, never matching the observer's
address: rule N5) and a root qdisc on a namespace's ``eth0``. :meth:`close` removes it all
and may be called any number of times, also after a failed :meth:`create`.

Commands run synchronously (each takes milliseconds); async callers use
``trio.to_thread.run_sync``. Needs root, ``ip`` (iproute2), ``nft`` and ``tc``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Final

__all__ = ["Network", "unavailable_reason"]

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
        self.subnet = _free_subnet()
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


def _free_subnet() -> str:
    """``10.213.X`` for the first X no route of this namespace mentions."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"],
                            capture_output=True, text=True).stdout
    for x in range(1, 255):
        if f"10.213.{x}." not in routes:
            return f"10.213.{x}"
    raise RuntimeError("no free 10.213.X.0/24 subnet")

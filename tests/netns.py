"""Network namespaces joined by veth links, for tests and benchmarks across "hosts".

``Hosts(n)`` creates ``n`` namespaces, each linked to this (the root)
namespace by its own veth pair on its own /24: host ``i`` is
``10.231.<i+1>.2`` and this side is ``10.231.<i+1>.1``.  ``run(i, argv)``
starts a process inside host ``i``.  Needs root and iproute2; ``available()``
says why not otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    subprocess.run(command, check=True, capture_output=True, text=True)


def available() -> str | None:
    """None if namespaces can be made here, else the reason they cannot."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    name = f"pescador-probe-{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` is not permitted here: {exc.stderr.strip()}"
    _ip("netns", "del", name)
    return None


class Hosts:
    def __init__(self, n: int, tag: str = "") -> None:
        self.names = []
        self.addresses = []
        self.procs: list = []
        suffix = f"{os.getpid() % 10000}{tag}"
        try:
            for i in range(n):
                name = f"pesc{suffix}h{i}"
                outer, inner = f"pv{suffix}o{i}"[:15], f"pv{suffix}i{i}"[:15]
                _ip("netns", "add", name)
                self.names.append(name)
                _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                _ip("link", "set", inner, "netns", name)
                _ip("addr", "add", f"10.231.{i + 1}.1/24", "dev", outer)
                _ip("link", "set", outer, "up")
                _ip("addr", "add", f"10.231.{i + 1}.2/24", "dev", inner, netns=name)
                _ip("link", "set", inner, "up", netns=name)
                _ip("link", "set", "lo", "up", netns=name)
                self.addresses.append(f"10.231.{i + 1}.2")
        except Exception:
            self.close()
            raise

    def run(self, i: int, argv: list, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.names[i], *argv], **kwargs)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for name in self.names:  # deleting a namespace deletes its veth, and so the pair
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.names = []

    def __enter__(self) -> "Hosts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Producers on other machines: :func:`serve` a recipe, read it with :func:`remote`.

A *producer* runs a recipe and serves its items on a TCP endpoint
(``serve(stream, bind="tcp://0.0.0.0:5555")``, or the command
``python -m pescador serve MODULE:FUNCTION --bind tcp://HOST:PORT``).  A
*consumer* reads from one or several producers with
``remote("tcp://host-a:5555", "tcp://host-b:5555")``, a stream like any
other: it composes with ``buffer``, ``mux``, ``take``.

Security
--------
Any endpoint that is not loopback is authenticated and encrypted with
ZeroMQ's CURVE: each side has a key pair (``python -m pescador keys DIR
NAME`` writes ``NAME.key`` and ``NAME.key_secret``), the consumer names the
producers' public keys and the producers name the consumers' public keys
they accept.  Either side refuses a peer whose key it does not know.  Plain
TCP is allowed on loopback, or elsewhere only with ``insecure=True``, which
warns: anyone who can reach the port could then read the items, or send
their own.

One consumer per producer
-------------------------
A producer serves one consumer at a time: several consumers connected to it
would share its items in turn, and only one would receive its end of
stream.  Inside :func:`pescador.zmq_offload` workers (or PyTorch
``DataLoader`` workers) a remote stream therefore reads only its share of
the endpoints, ``endpoints[id::count]``, so that each producer has one
reader; give at least as many producers as workers.

Faults and flow
---------------
TCP keepalive tells the consumer when a producer's machine goes away
(within about four seconds; a producer process that dies closes its
connection at once).  Items in flight on a connection that breaks are lost
with it.  It warns
(:class:`ProducerWarning`), records it in the :class:`RemoteStatus` you may
pass as ``status=``, and carries on with the others; it raises
:class:`~pescador.PescadorError` only when no producer has been connected
for ``grace`` seconds.  A producer that comes back is read again.  Each
producer's queue is bounded (``hwm`` messages on each side), so a fast
producer waits for a slow consumer.  A producer whose stream ends sends an
end of stream; when every producer has ended, so does the remote stream.
"""

from __future__ import annotations

import ipaddress
import os
import re
import pathlib
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from . import wire
from .core import check_count, stream
from .exceptions import PescadorError
from .workers import worker_info

__all__ = ["serve", "remote", "RemoteStatus", "ProducerWarning", "make_keys"]



def _liveness(sock: zmq.Socket) -> None:
    """Notice a peer that is gone through TCP keepalive probes (about 4 s), not ZMTP heartbeats.

    The kernel answers keepalive probes even while the application reads
    nothing, so a consumer that is slow (its queue full, so ZeroMQ stops
    reading the connection) is never mistaken for a dead one, as it would be
    by heartbeats; a process that dies closes its connections at once.
    """
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 2)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 2)
    sock.setsockopt(zmq.IPV6, 1)  # (IPv4 addresses keep working)


class ProducerWarning(RuntimeWarning):
    """A remote producer went away, refused the handshake, or ended."""


class InsecureWarning(RuntimeWarning):
    """Plain TCP beyond loopback: items can be read or forged on the way."""


# ----------------------------------------------------------------------------
# Endpoints and keys
# ----------------------------------------------------------------------------


_ENDPOINT = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+|\*):([0-9]{1,5})")


def _host(endpoint: str, where: str) -> str:
    """The host of a ``tcp://HOST:PORT`` endpoint (an IPv6 address in brackets), checked."""
    match = _ENDPOINT.fullmatch(endpoint) if isinstance(endpoint, str) else None
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise PescadorError(
            f"{where}: endpoint {endpoint!r} must be tcp://HOST:PORT (a host name, an IPv4 address, an "
            "IPv6 address in brackets, or * to bind every interface)"
        )
    return match.group(1).strip("[]")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _needs_curve(endpoints: Sequence[str], insecure: bool, has_keys: bool, where: str) -> bool:
    """Whether CURVE is used; refuses (or, with insecure=True, warns about) plain TCP beyond loopback."""
    remote_hosts = [e for e in endpoints if not _is_loopback(_host(e, where))]
    if has_keys:
        return True
    if remote_hosts and not insecure:
        raise PescadorError(
            f"{where}: {remote_hosts[0]} is not loopback, so it needs keys (CURVE authentication and "
            "encryption): make them with `python -m pescador keys DIR NAME` and pass them, or pass "
            "insecure=True to send items in the clear"
        )
    if remote_hosts:
        warnings.warn(
            f"{where}: plain TCP on {', '.join(remote_hosts)}: anyone who can reach it can read the items "
            "or send their own; use keys for anything but a trusted network",
            InsecureWarning,
            stacklevel=3,
        )
    return False


def _load(path: Any, where: str, secret: bool) -> tuple:
    path = pathlib.Path(path)
    try:
        public, private = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise PescadorError(f"{where}: cannot read the key file {str(path)!r}: {exc}") from None
    if secret and private is None:
        raise PescadorError(
            f"{where}: {str(path)!r} holds no secret key; give the NAME.key_secret file made by "
            "`python -m pescador keys`"
        )
    return public, private


def _public_keys(keys: Any, where: str) -> set:
    """Public keys from key files, or every ``*.key`` file of a directory."""
    if keys is None:
        return set()
    if isinstance(keys, (str, os.PathLike)):
        keys = [keys]
    found = set()
    for entry in keys:
        path = pathlib.Path(entry)
        files = sorted(path.glob("*.key")) if path.is_dir() else [path]
        for file in files:
            found.add(_load(file, where, secret=False)[0])
    if not found:
        raise PescadorError(f"{where}: no public keys found in {keys!r}")
    return found


def make_keys(directory: Any, name: str) -> tuple:
    """Write a CURVE key pair, ``NAME.key`` (public) and ``NAME.key_secret``, into ``directory``.

    The directory is created with mode 0700 and the secret file gets mode
    0600.  Returns the two paths.  (``python -m pescador keys DIR NAME``.)

    Examples
    --------
    >>> import tempfile, pescador.remote
    >>> public, secret = pescador.remote.make_keys(tempfile.mkdtemp(), "trainer")
    >>> public.name, secret.name
    ('trainer.key', 'trainer.key_secret')
    """
    directory = pathlib.Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret, 0o600)
    return pathlib.Path(public), pathlib.Path(secret)


# ----------------------------------------------------------------------------
# The producer
# ----------------------------------------------------------------------------


class _Allowed:
    """ZAP credentials check: only the given public keys."""

    def __init__(self, keys: set) -> None:
        self.keys = set(keys)  # z85 text, as load_certificate gives and the authenticator asks

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def serve(
    source: Any,
    bind: str,
    *,
    key: Any = None,
    authorized: Any = None,
    insecure: bool = False,
    hwm: int = 32,
    copy: bool = False,
    linger: float = 10.0,
) -> int:
    """Run a recipe and serve its items on ``bind`` until it ends; return how many were sent.

    Parameters
    ----------
    source
        Anything :func:`pescador.stream` accepts.
    bind : str
        ``tcp://HOST:PORT`` (``tcp://0.0.0.0:5555`` for every interface,
        ``tcp://127.0.0.1:5555`` for this machine only).
    key : path, optional
        This producer's ``NAME.key_secret`` file.
    authorized : path or list of paths, optional
        The public keys of the consumers allowed to connect: ``.key`` files,
        or directories whose ``*.key`` files are read.
    insecure : bool
        Allow plain TCP beyond loopback (warns).
    hwm : int
        How many messages may wait for the consumer before the producer
        blocks.
    copy : bool
        Copy arrays into messages (see :func:`pescador.zmq_offload`).
    linger : float
        When the stream ends, the producer waits for its consumer to read the
        last items and leave (which acknowledges the end of stream), however
        long that takes; with no consumer connected, it waits ``linger``
        seconds for one, then closes.
    """
    where = "serve"
    recipe = stream(source)
    hwm = check_count(hwm, where, "hwm", minimum=1)
    curve = _needs_curve([bind], insecure, key is not None or authorized is not None, where)
    if curve and (key is None or authorized is None):
        raise PescadorError(
            f"{where}: with keys, give both key= (this producer's NAME.key_secret) and authorized= "
            "(the consumers' public keys)"
        )
    context = zmq.Context()
    authenticator = monitor = None
    sock = context.socket(zmq.PUSH)
    try:
        sock.setsockopt(zmq.SNDHWM, hwm)
        _liveness(sock)
        if curve:
            from zmq.auth.thread import ThreadAuthenticator

            public, secret = _load(key, where, secret=True)
            allowed = _public_keys(authorized, where)
            authenticator = ThreadAuthenticator(context)
            authenticator.start()
            authenticator.configure_curve_callback(domain="*", credentials_provider=_Allowed(allowed))
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True
        monitor = sock.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        try:
            sock.bind(bind)
        except zmq.ZMQError as exc:
            raise PescadorError(f"{where}: cannot bind {bind}: {exc}") from None
        peers = _Peers(monitor)
        sent = 0
        try:
            for position, item in enumerate(recipe):
                sock.send_multipart(wire.encode_item(item, copy, position), copy=False)
                sent += 1
                if not sent % 256:
                    peers.update()
        except Exception:  # tell the consumer why this producer stops, then raise here too
            sock.setsockopt(zmq.SNDTIMEO, int(linger * 1000))
            try:
                sock.send_multipart(wire.encode_error(traceback.format_exc()))
                _wait_for_leaving(peers, linger, ended=True)
            except zmq.Again:
                pass
            raise
        peers.update()
        sock.send_multipart(wire.encode_end())
        _wait_for_leaving(peers, linger)
        return sent
    finally:
        if monitor is not None:
            sock.disable_monitor()
            monitor.close(linger=0)
        sock.close(linger=0)
        if authenticator is not None:
            authenticator.stop()
        context.term()


def _wait_for_leaving(peers: "_Peers", linger: float, ended: bool = True) -> None:
    """The end of stream is acknowledged by the consumer's leaving.

    Closing before it has read everything could reset the connection and
    lose the tail.  Wait while a consumer is connected, however long it
    takes it to read; with none connected, wait ``linger`` seconds for one.
    """
    peers.ended = ended
    alone_since = time.monotonic()
    while True:
        peers.update(100)
        if peers.count:
            alone_since = time.monotonic()
        elif peers.left_after_end or time.monotonic() - alone_since > linger:
            return


class _Peers:
    """Counts a producer's connected consumers from its monitor's events."""

    def __init__(self, monitor: zmq.Socket) -> None:
        self.monitor = monitor
        self.count = 0
        self.ended = False
        self.left_after_end = False

    def update(self, wait_ms: int = 0) -> None:
        while self.monitor.poll(wait_ms):
            event = recv_monitor_message(self.monitor)["event"]
            if event == zmq.EVENT_ACCEPTED:
                self.count += 1
            elif event == zmq.EVENT_DISCONNECTED:
                self.count = max(0, self.count - 1)
                if self.ended:
                    self.left_after_end = True
            wait_ms = 0


# ----------------------------------------------------------------------------
# The consumer
# ----------------------------------------------------------------------------


class RemoteStatus:
    """How each producer of a :func:`remote` stream is doing; pass one as ``status=``.

    ``status.producers`` maps each endpoint to a dict with ``state``
    (``"connecting"``, ``"connected"``, ``"lost"``, ``"refused"``,
    ``"failed"`` (its recipe raised) or ``"ended"``), ``items`` (received in the current run) and ``since``
    (``time.monotonic()`` of the last change).  ``str(status)`` is a table.
    """

    def __init__(self) -> None:
        self.producers: dict = {}

    def _start(self, endpoints: Sequence[str]) -> None:
        now = time.monotonic()
        self.producers = {e: {"state": "connecting", "items": 0, "since": now} for e in endpoints}

    def _set(self, endpoint: str, state: str) -> None:
        entry = self.producers[endpoint]
        if entry["state"] != state:
            entry["state"], entry["since"] = state, time.monotonic()

    def __str__(self) -> str:
        lines = ["producer                         state         items"]
        for endpoint, entry in self.producers.items():
            lines.append(f"{endpoint:32s} {entry['state']:10s} {entry['items']:9,d}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        states = ", ".join(f"{e}: {v['state']}" for e, v in self.producers.items())
        return f"<RemoteStatus {states}>"


_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_FAILED = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


def _remote(endpoints, key, producer_keys, insecure, grace, hwm, copy, status):
    where = "remote"
    curve = _needs_curve(endpoints, insecure, key is not None or producer_keys is not None, where)
    if curve:
        if key is None or producer_keys is None:
            raise PescadorError(
                f"{where}: with keys, give both key= (this consumer's NAME.key_secret) and "
                "producer_keys= (the producers' public keys)"
            )
        public, secret = _load(key, where, secret=True)
        if isinstance(producer_keys, (str, os.PathLike)):
            producer_keys = [producer_keys] * len(endpoints)
        if len(producer_keys) != len(endpoints):
            raise PescadorError(
                f"{where}: producer_keys has {len(producer_keys)} entries for {len(endpoints)} endpoints"
            )
        servers = [_load(k, where, secret=False)[0] for k in producer_keys]
    info = worker_info()
    if info.count > 1:  # inside zmq_offload or DataLoader workers: each reads its share of producers
        endpoints = endpoints[info.id :: info.count]
        if curve:
            servers = servers[info.id :: info.count]
    status = status if status is not None else RemoteStatus()
    status._start(endpoints)
    context = zmq.Context()
    socks, monitors = [], []
    try:
        for n, endpoint in enumerate(endpoints):
            sock = context.socket(zmq.PULL)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, hwm)
            _liveness(sock)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            if curve:
                sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, servers[n]
            socks.append(sock)
            monitors.append(sock.get_monitor_socket(_EVENTS))
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:
                raise PescadorError(f"{where}: cannot connect to {endpoint}: {exc}") from None
        yield from _receive(endpoints, socks, monitors, grace, copy, status)
    finally:
        for sock, monitor in zip(socks, monitors):
            if not sock.closed:
                sock.disable_monitor()
                sock.close(linger=0)
            monitor.close(linger=0)
        context.term()


def _receive(endpoints, socks, monitors, grace, copy, status) -> Iterator:
    producers = status.producers
    active = list(range(len(socks)))  # producers that have not ended
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    connected = 0
    failures: list = []
    down_since = time.monotonic()  # when the last connected producer went (or the run started)
    next_events = time.monotonic() + 0.1
    turn = 0

    def events() -> None:
        """Apply the monitors' news to the status (without waiting)."""
        nonlocal connected, down_since
        for n in active:
            endpoint = endpoints[n]
            while monitors[n].poll(0):
                event = recv_monitor_message(monitors[n])["event"]
                state = producers[endpoint]["state"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    if state != "connected":
                        connected += 1
                    status._set(endpoint, "connected")
                elif event & _FAILED:
                    if state != "refused":
                        warnings.warn(
                            f"remote: {endpoint} refused the handshake: its key is not the one given "
                            "in producer_keys, or it does not accept this consumer's key",
                            ProducerWarning,
                            stacklevel=5,
                        )
                    if state == "connected":
                        connected -= 1
                    status._set(endpoint, "refused")
                elif event == zmq.EVENT_DISCONNECTED and state == "connected":
                    warnings.warn(
                        f"remote: lost {endpoint} (items in flight on its connection are lost); "
                        "carrying on with the others",
                        ProducerWarning,
                        stacklevel=5,
                    )
                    connected -= 1
                    status._set(endpoint, "lost")
                if connected == 0 and state == "connected":
                    down_since = time.monotonic()

    while active:
        got = False
        for _ in range(len(active)):  # one message from each producer in turn, without waiting
            turn = (turn + 1) % len(active)
            n = active[turn]
            try:
                frames = socks[n].recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                continue
            got = True
            kind, payload = wire.decode(frames, copy)
            if kind == wire.ITEM:
                producers[endpoints[n]]["items"] += 1
                yield payload
            elif kind == wire.END:
                events()
                if producers[endpoints[n]]["state"] == "connected":
                    connected -= 1
                status._set(endpoints[n], "ended")
                active.remove(n)
                poller.unregister(socks[n])
                socks[n].disable_monitor()
                socks[n].close(linger=0)  # leaving tells the producer that its end arrived
                if connected == 0:
                    down_since = time.monotonic()
                break
            else:  # the producer's recipe raised: report it, and carry on with the others
                events()
                if producers[endpoints[n]]["state"] == "connected":
                    connected -= 1
                warnings.warn(
                    f"remote: {endpoints[n]} failed; its traceback:\n{payload}", ProducerWarning, stacklevel=3
                )
                status._set(endpoints[n], "failed")
                failures.append(f"{endpoints[n]}:\n{payload}")
                active.remove(n)
                poller.unregister(socks[n])
                socks[n].disable_monitor()
                socks[n].close(linger=0)
                if connected == 0:
                    down_since = time.monotonic()
                break
        now = time.monotonic()
        if got and now < next_events:
            continue
        next_events = now + 0.1
        events()
        if not got:
            poller.poll(100)
            events()
        if connected > 0:
            down_since = time.monotonic()
        elif active and time.monotonic() - down_since > grace:
            raise PescadorError(
                f"remote: no producer connected for {grace:g} s:\n{status}\n(producers that went away "
                "are lost; refused ones have a key that does not match)"
            )
    if failures:
        raise PescadorError("remote: every producer has ended, and these failed:\n" + "\n".join(failures))


def remote(
    *endpoints: str,
    key: Any = None,
    producer_keys: Any = None,
    insecure: bool = False,
    grace: float = 10.0,
    hwm: int = 32,
    copy: bool = False,
    status: RemoteStatus | None = None,
):
    """A stream of the items served by one or several producers (see :func:`serve`).

    Items from several producers interleave as they arrive.  Each run
    connects afresh.

    Parameters
    ----------
    *endpoints : str
        ``tcp://HOST:PORT`` of each producer.
    key : path, optional
        This consumer's ``NAME.key_secret`` file.
    producer_keys : path or list of paths, optional
        The producers' public ``.key`` files: one for all, or one per
        endpoint.
    insecure : bool
        Allow plain TCP beyond loopback (warns).
    grace : float
        Seconds without any connected producer before the stream fails.
    hwm : int
        Messages that may wait per producer.
    copy : bool
        Copy arrays out of the received frames.
    status : RemoteStatus, optional
        Filled in as the run goes: each producer's state and item count.

    Returns
    -------
    Stream
    """
    where = "remote"
    if not endpoints:
        raise PescadorError(f"{where}: give at least one endpoint, e.g. remote('tcp://host:5555')")
    for endpoint in endpoints:
        _host(endpoint, where)
    if not (isinstance(grace, (int, float)) and not isinstance(grace, bool) and grace > 0):
        raise PescadorError(f"{where}: grace must be a positive number of seconds; got {grace!r}")
    if status is not None and not isinstance(status, RemoteStatus):
        raise PescadorError(f"{where}: status must be a pescador.remote.RemoteStatus; got {type(status).__name__}")
    hwm = check_count(hwm, where, "hwm", minimum=1)
    if key is None and producer_keys is None and not insecure:
        _needs_curve(endpoints, False, False, where)  # refuses plain TCP beyond loopback now, not at the run
    return stream(
        _remote, tuple(endpoints), key=key, producer_keys=producer_keys, insecure=insecure, grace=float(grace),
        hwm=hwm, copy=bool(copy), status=status,
    )

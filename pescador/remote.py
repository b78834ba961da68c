"""Producers on other machines: :func:`serve` a recipe, read it with :func:`remote`.

A *producer* runs a recipe and serves its items on a TCP endpoint
(``serve(stream, bind="tcp://0.0.0.0:5555")``, or the command
``python -m pescador serve MODULE:FUNCTION --bind tcp://HOST:PORT``).  A
*consumer* reads from one or several producers with
``remote("tcp://host-a:5555", "tcp://host-b:5555")``, a stream like any
other: it composes with ``buffer``, ``mux``, ``take``.

Security
--------
No endpoint is open to strangers by default.  Between machines, items are
authenticated and encrypted with ZeroMQ's CURVE: each side has a key pair
(``python -m pescador keys DIR NAME`` writes ``NAME.key`` and
``NAME.key_secret``), the consumer names the producers' public keys and the
producers name the consumers' public keys they accept.  Either side refuses
a peer whose key it does not know.  On one machine, serve on an
``ipc://DIR/NAME`` path in a directory only you can enter (``mkdir -m 700
DIR``, or :func:`tempfile.mkdtemp`): both sides check that ``DIR`` is yours
and private, so no other user can connect; keys work on loopback too.  Plain
TCP, even on loopback (which every user of the machine can reach), needs
``insecure=True``, which warns: anyone who can reach the port could then
take the items, or send their own.

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
with it.  The consumer reports what happened to each producer: ``lost`` (it
went away, during the handshake or after), ``refused`` (the keys do not
match), ``slow`` (its handshake has not finished within ``grace``) or
``silent`` (connected for ``grace`` seconds and nothing received: slow to
make its first item, or another consumer connected to it took its items).
It warns (:class:`ProducerWarning`), records it in the :class:`RemoteStatus`
you may pass as ``status=``, and carries on with the others; it raises
:class:`~pescador.PescadorError` only when no producer has been delivering
for ``grace`` seconds.  A producer that comes back is read again.  Each
producer's queue is bounded (``hwm`` messages on each side), so a fast
producer waits for a slow consumer.  A producer whose stream ends sends an
end of stream; when every producer has ended, so does the remote stream.
A producer whose recipe raises sends its traceback, and the exception's
type and plain arguments (never a pickle); the consumer warns and carries
on, and once every producer has ended it raises the first such exception:
as its own type where that is a built-in exception (rebuilt from its
arguments: nothing that comes over the network is unpickled), with the
producer's traceback in a :class:`~pescador.WorkerError` as its cause, or
as that :class:`~pescador.WorkerError` otherwise.
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
from .exceptions import ParameterError, ParameterTypeError, PescadorError
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
_IPC_MAX = 107  # bytes in a Unix socket path (sun_path, less its terminating NUL)


def _endpoint(endpoint: str, where: str) -> tuple:
    """``("tcp", HOST)`` of ``tcp://HOST:PORT`` (an IPv6 address in brackets) or ``("ipc", PATH)``, checked."""
    if isinstance(endpoint, str) and endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if not path.startswith("/") or path.endswith("/"):
            raise ParameterError(f"{where}: endpoint {endpoint!r} must be ipc:///ABSOLUTE/DIR/NAME")
        if len(os.fsencode(path)) > _IPC_MAX:
            raise ParameterError(
                f"{where}: the ipc path of {endpoint!r} is {len(os.fsencode(path))} bytes; Unix sockets allow "
                f"at most {_IPC_MAX}: use a shorter directory (tempfile.mkdtemp() gives one)"
            )
        return "ipc", path
    match = _ENDPOINT.fullmatch(endpoint) if isinstance(endpoint, str) else None
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise (ParameterError if isinstance(endpoint, str) else ParameterTypeError)(
            f"{where}: endpoint {endpoint!r} must be tcp://HOST:PORT (a host name, an IPv4 address, an "
            "IPv6 address in brackets, or * to bind every interface) or ipc:///DIR/NAME (on this machine)"
        )
    return "tcp", match.group(1).strip("[]")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _needs_curve(endpoints: Sequence[str], insecure: bool, has_keys: bool, where: str) -> bool:
    """Whether CURVE is used; refuses (or, with insecure=True, warns about) plain TCP, loopback included.

    Plain TCP on loopback is no private channel: every user of the machine
    can connect to it, and a PULL socket that connects first takes the items.
    """
    tcp = [e for e in endpoints if _endpoint(e, where)[0] == "tcp"]
    if has_keys:
        return True
    if tcp and not insecure:
        host = _endpoint(tcp[0], where)[1]
        if _is_loopback(host):
            raise ParameterError(
                f"{where}: plain TCP on {tcp[0]} is open to every user of this machine (anyone could connect "
                "first and take the items): on one machine use an ipc:///DIR/NAME endpoint in a directory only "
                "you can enter (`mkdir -m 700 DIR`, or tempfile.mkdtemp()), or keys (`python -m pescador keys "
                "DIR NAME`), or pass insecure=True"
            )
        raise ParameterError(
            f"{where}: {tcp[0]} is not loopback, so it needs keys (CURVE authentication and "
            "encryption): make them with `python -m pescador keys DIR NAME` and pass them, or pass "
            "insecure=True to send items in the clear"
        )
    if tcp:
        warnings.warn(
            f"{where}: plain TCP on {', '.join(tcp)}: anyone who can reach it (on loopback: every user of this "
            "machine) can take the items or send their own; use keys, or an ipc:// path in a private directory",
            InsecureWarning,
            stacklevel=3,
        )
    return False


def _check_private(endpoint: str, insecure: bool, where: str) -> None:
    """An ``ipc://`` path without keys must lie in a directory that only this user can enter.

    Connecting to a Unix socket needs search permission on its directory, so
    a directory of mode 0700 owned by this user keeps every other user out
    (of connecting to it, and of binding a socket of their own in its place).
    """
    directory = os.path.dirname(_endpoint(endpoint, where)[1])
    try:
        info = os.stat(directory)
    except OSError as exc:
        raise PescadorError(
            f"{where}: cannot use {endpoint}: its directory {directory!r} is not there ({exc.strerror}); make it "
            f"before starting either side, private to you: `mkdir -m 700 {directory}`"
        ) from None
    problem = None
    if info.st_uid != os.geteuid():
        problem = f"is owned by user id {info.st_uid}, not by you ({os.geteuid()})"
    elif info.st_mode & 0o077:
        problem = f"has mode {info.st_mode & 0o777:o}, so other users can enter it and connect"
    if problem is None:
        return
    if not insecure:
        raise PescadorError(
            f"{where}: the directory {directory!r} of {endpoint} {problem}: use a directory only you can enter "
            f"(`chmod 700 {directory}`, or tempfile.mkdtemp()), or keys, or pass insecure=True"
        )
    warnings.warn(f"{where}: the directory of {endpoint} {problem}", InsecureWarning, stacklevel=3)


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
    batch_wait: float = 0.001,
) -> int:
    """Run a recipe and serve its items on ``bind`` until it ends; return how many were sent.

    Parameters
    ----------
    source
        Anything :func:`pescador.stream` accepts.
    bind : str
        ``tcp://HOST:PORT`` (``tcp://0.0.0.0:5555`` for every interface;
        needs keys, or ``insecure=True``), or ``ipc:///DIR/NAME`` for a
        consumer on this machine, ``DIR`` being a directory only you can
        enter (checked).
    key : path, optional
        This producer's ``NAME.key_secret`` file.
    authorized : path or list of paths, optional
        The public keys of the consumers allowed to connect: ``.key`` files,
        or directories whose ``*.key`` files are read.
    insecure : bool
        Allow plain TCP (loopback included), or an ``ipc://`` path in a
        directory that other users can enter (warns).
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
    batch_wait : float >= 0
        Small items share messages when the source is fast or the consumer
        slow, each held at most about this many seconds longer than flow
        control makes it wait; 0 sends one message per item (see
        :func:`pescador.zmq_offload`).

    Examples
    --------
    On one machine, over an ``ipc://`` path in a private directory (no keys
    needed; a producer in a thread here, usually a process of its own):

    >>> import tempfile, threading, numpy as np, pescador
    >>> from pescador.remote import remote, serve
    >>> endpoint = "ipc://" + tempfile.mkdtemp() + "/producer"
    >>> producer = threading.Thread(target=serve, args=([{"i": np.array([i])} for i in range(3)], endpoint))
    >>> producer.start()
    >>> [int(x["i"][0]) for x in remote(endpoint)]
    [0, 1, 2]
    >>> producer.join()
    """
    where = "serve"
    recipe = stream(source)
    hwm = check_count(hwm, where, "hwm", minimum=1)
    if not isinstance(batch_wait, (int, float)) or isinstance(batch_wait, bool) or not 0 <= batch_wait <= 10:
        raise PescadorError(f"{where}: batch_wait must be a number of seconds from 0 to 10; got {batch_wait!r}")
    curve = _needs_curve([bind], insecure, key is not None or authorized is not None, where)
    if not curve and bind.startswith("ipc://"):
        _check_private(bind, insecure, where)
    if curve and (key is None or authorized is None):
        raise ParameterTypeError(
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
        outbox = wire.Outbox(_Sender(sock).send, _Sender(sock).writable, batch_wait, copy)
        sent = 0
        try:
            try:
                for item in recipe:
                    outbox.put(item)
                    sent += 1
                    if not sent % 256:
                        peers.update()
                outbox.finish()  # (the items held leave before the end of stream)
            finally:
                outbox.close()
        except Exception as exc:  # tell the consumer why this producer stops, then raise here too
            sock.setsockopt(zmq.SNDTIMEO, int(linger * 1000))
            try:
                report, text = exc, traceback.format_exc()
                try:
                    outbox.finish()  # the items made before the error leave first
                except zmq.Again:
                    raise  # (the consumer takes nothing: no error message either, rather than one after a gap)
                except Exception as earlier:  # one of those items cannot travel: the consumer is told that
                    report, text = earlier, traceback.format_exc()
                sock.send_multipart(wire.encode_error(text, report))  # (never pickled)
                _wait_for_leaving(peers, linger, ended=True)
            except zmq.Again:
                pass
            raise
        peers.update()
        sock.send_multipart(wire.encode_end())
        _end_the_others(sock, peers)
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


class _Sender:
    """A producer's PUSH socket, as the outbox sends through it."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock

    def send(self, frames: list) -> None:
        wire.send(self.sock, frames)

    def writable(self) -> bool:
        return bool(self.sock.getsockopt(zmq.EVENTS) & zmq.POLLOUT)


def _end_the_others(sock: zmq.Socket, peers: "_Peers") -> None:
    """One more end of stream for each further consumer connected (without waiting).

    A PUSH socket deals messages to its consumers in turn, so with several
    connected (one consumer per producer is the rule, but a second may come)
    only one would receive the end and the others would wait for it forever.
    """
    for _ in range(peers.count - 1):
        try:
            sock.send_multipart(wire.encode_end(), zmq.NOBLOCK)
        except zmq.Again:
            return


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

    ``status.producers`` maps each endpoint to a dict with ``state``,
    ``items`` (received in the current run), ``since`` (``time.monotonic()``
    of the last change) and ``detail`` (what happened last, in words).  The
    states: ``"connecting"``; ``"connected"``; ``"silent"`` (connected for
    ``grace`` seconds and nothing received on that connection); ``"slow"``
    (its handshake has not finished within ``grace``); ``"lost"`` (it went
    away, during the handshake or after); ``"refused"`` (the keys do not
    match); ``"failed"`` (its recipe raised); ``"ended"``.  ``str(status)``
    is a table.
    """

    def __init__(self) -> None:
        self.producers: dict = {}

    def _start(self, endpoints: Sequence[str]) -> None:
        now = time.monotonic()
        self.producers = {e: {"state": "connecting", "items": 0, "since": now, "detail": ""} for e in endpoints}

    def _set(self, endpoint: str, state: str, detail: str | None = None) -> None:
        entry = self.producers[endpoint]
        if entry["state"] != state:
            entry["state"], entry["since"] = state, time.monotonic()
        if detail is not None:
            entry["detail"] = detail

    def __str__(self) -> str:
        lines = ["producer                         state         items  what happened"]
        for endpoint, entry in self.producers.items():
            lines.append(f"{endpoint:32s} {entry['state']:10s} {entry['items']:9,d}  {entry['detail']}".rstrip())
        return "\n".join(lines)

    def __repr__(self) -> str:
        states = ", ".join(f"{e}: {v['state']}" for e, v in self.producers.items())
        return f"<RemoteStatus {states}>"


_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CLOSED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_MECHANISM_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002)
_CRYPTOGRAPHIC = getattr(zmq, "PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC", 0x11000017)


class _Producer:
    """What the consumer knows of one producer's connection, from its socket's monitor.

    libzmq's events say less than one would like (seen with libzmq 4.3):
    ``HANDSHAKE_FAILED_AUTH`` means the producer refused this consumer's key
    and ``HANDSHAKE_FAILED_PROTOCOL`` a handshake that cannot work (keys on
    one side only); but ``HANDSHAKE_FAILED_NO_DETAIL`` only means that the
    connection closed during the handshake, which is what a producer does
    whose key is not the one given (it cannot read our greeting and hangs
    up), and also what a producer that dies (or closes) during the handshake
    does.  The next attempt tells them apart: a producer that went away
    accepts no more TCP connections (the attempt ends in ``CLOSED``), a
    producer with another key accepts the connection and hangs up again.
    libzmq's own handshake timeout is off (it too would read as a hang-up);
    a handshake that has not finished within ``grace`` is reported as slow.
    """

    def __init__(self, endpoint: str, sock: zmq.Socket, monitor: zmq.Socket, status: RemoteStatus) -> None:
        self.endpoint, self.sock, self.monitor, self.status = endpoint, sock, monitor, status
        self.tcp_since: float | None = None  # when this attempt's connection opened (its handshake under way)
        self.slow_reported = False  # this attempt was reported slow
        self.hung_up = False  # the previous attempt was closed during its handshake; judged by the next one
        self.connected_since = 0.0
        self.items_on_connection = 0

    @property
    def state(self) -> str:
        return self.status.producers[self.endpoint]["state"]

    def delivering(self) -> bool:
        return self.state == "connected" and self.items_on_connection > 0

    def handshaking(self) -> bool:
        """Its handshake is under way and has not been reported slow yet (it is not judged yet)."""
        return self.tcp_since is not None and not self.slow_reported and self.state != "refused"

    def received(self) -> None:
        if self.state != "connected":  # (an item proves the handshake: apply its event first)
            self.events()
        self.status.producers[self.endpoint]["items"] += 1
        self.items_on_connection += 1
        if self.state == "silent":
            self.status._set(self.endpoint, "connected", "delivering again")

    def events(self) -> bool:
        """Apply the queued monitor events; True if a handshake succeeded."""
        succeeded = False
        while self.monitor.poll(0):
            message = recv_monitor_message(self.monitor)
            succeeded |= self._event(message["event"], int(message["value"]))
        return succeeded

    def _event(self, event: int, value: int) -> bool:
        if event == zmq.EVENT_CONNECTED:
            self.tcp_since, self.slow_reported = time.monotonic(), False
        elif event == zmq.EVENT_CLOSED:  # a connection attempt failed: nothing accepts connections there now
            if self.hung_up:
                self._report("lost", "went away during the handshake (it closed the connection and accepts no more)")
            self.hung_up = False
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.tcp_since, self.hung_up = None, False
            self.connected_since, self.items_on_connection = time.monotonic(), 0
            self.status._set(self.endpoint, "connected", "connected")
            return True
        elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self._report("refused", f"refused this consumer's key (ZAP status {value}): it does not list this "
                         "consumer's public key among the ones it accepts")
        elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            self._report("refused", _protocol_error(value))
        elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self._hung_up()
        elif event == zmq.EVENT_DISCONNECTED and self.state in ("connected", "silent"):
            self._report("lost", "lost (items in flight on its connection are lost); carrying on with the others")
        return False

    def _hung_up(self) -> None:
        was_slow, self.tcp_since = self.slow_reported, None
        if was_slow:  # (the producer gave up on a handshake that we reported slow already)
            self.hung_up = False
        elif self.hung_up:
            self._report("refused", "closes the connection during the handshake on every attempt: its key is not "
                         "the one given in producer_keys for it (or it serves without keys)")
        else:
            self.hung_up = True

    def check(self, now: float, grace: float) -> None:
        """Report a handshake or a first item that has not come within ``grace`` seconds."""
        if self.tcp_since is not None and not self.slow_reported and now - self.tcp_since > grace:
            self.slow_reported = True
            self._report("slow", f"has not finished the handshake within {grace:g} s (overloaded, or stopped?)")
        if self.state == "connected" and not self.items_on_connection and now - self.connected_since > grace:
            self._report("silent", f"connected for {grace:g} s and sent nothing: it is slow to make its first "
                          "item, or another consumer connected to it is taking its items")

    def _report(self, state: str, what: str) -> None:
        if self.state != state:
            warnings.warn(f"remote: {self.endpoint} {what}", ProducerWarning, stacklevel=6)
        self.status._set(self.endpoint, state, what)

    def close(self, state: str, what: str) -> None:
        """Its stream ended (``state``): leave, which tells the producer that its end arrived."""
        self.status._set(self.endpoint, state, what)
        self._leave()

    def _leave(self) -> None:
        if not self.sock.closed:
            self.sock.disable_monitor()
            self.sock.close(linger=0)

    def release(self) -> None:
        """At the end of the run: close its socket (if still open) and its monitor."""
        self._leave()
        self.monitor.close(linger=0)


def _protocol_error(code: int) -> str:
    if code == _MECHANISM_MISMATCH:
        return "refused the handshake: one side uses keys and the other does not"
    if code == _CRYPTOGRAPHIC:
        return "refused the handshake: its key is not the one given in producer_keys"
    name = next((n for n in dir(zmq) if n.startswith("PROTOCOL_ERROR_") and getattr(zmq, n) == code), hex(code))
    return f"refused the handshake ({name})"


def _remote(endpoints, key, producer_keys, insecure, grace, hwm, copy, status):
    where = "remote"
    curve = _needs_curve(endpoints, insecure, key is not None or producer_keys is not None, where)
    if curve:
        if key is None or producer_keys is None:
            raise ParameterTypeError(
                f"{where}: with keys, give both key= (this consumer's NAME.key_secret) and "
                "producer_keys= (the producers' public keys)"
            )
        public, secret = _load(key, where, secret=True)
        if isinstance(producer_keys, (str, os.PathLike)):
            producer_keys = [producer_keys] * len(endpoints)
        if len(producer_keys) != len(endpoints):
            raise ParameterError(
                f"{where}: producer_keys has {len(producer_keys)} entries for {len(endpoints)} endpoints"
            )
        servers = [_load(k, where, secret=False)[0] for k in producer_keys]
    else:
        for endpoint in endpoints:
            if endpoint.startswith("ipc://"):
                _check_private(endpoint, insecure, where)
    info = worker_info()
    if info.count > 1:  # inside zmq_offload or DataLoader workers: each reads its share of producers
        endpoints = endpoints[info.id :: info.count]
        if curve:
            servers = servers[info.id :: info.count]
    status = status if status is not None else RemoteStatus()
    status._start(endpoints)
    context = zmq.Context()
    producers = []
    try:
        for n, endpoint in enumerate(endpoints):
            sock = context.socket(zmq.PULL)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, hwm)
            _liveness(sock)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
            sock.setsockopt(zmq.HANDSHAKE_IVL, 0)  # (timed here instead: see _Producer)
            if curve:
                sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, servers[n]
            producers.append(_Producer(endpoint, sock, sock.get_monitor_socket(_EVENTS), status))
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:
                raise PescadorError(f"{where}: cannot connect to {endpoint}: {exc}") from None
        yield from _receive(producers, grace, copy, status)
    finally:
        for producer in producers:
            producer.release()
        context.term()


def _receive(producers: list, grace: float, copy: bool, status: RemoteStatus) -> Iterator:
    """Items from the producers in turn, until each has ended; the producers' news go to ``status``.

    The stream fails when for ``grace`` seconds no producer has been
    delivering: connected and sending on its current connection (a producer
    that connects has ``grace`` seconds for its first item, and a handshake
    under way is given ``grace`` seconds before it is judged slow).
    """
    active = list(producers)  # producers that have not ended
    poller = zmq.Poller()
    for producer in producers:
        poller.register(producer.sock, zmq.POLLIN)
    failures: list = []
    down_since = time.monotonic()  # since when no producer has been delivering (or the last handshake)
    next_check = 0.0
    turn = 0
    while active:
        got = False
        for _ in range(len(active)):  # one message from each producer in turn, without waiting
            turn = (turn + 1) % len(active)
            producer = active[turn]
            try:
                frames = producer.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                continue
            got = True
            kind, payload = wire.decode(frames, copy)
            if kind == wire.ITEM:
                producer.received()
                yield payload
                continue
            if kind == wire.BATCH:  # several items, handed out one at a time
                for item in payload[0]:
                    producer.received()
                    yield item
                continue
            _retire(producer, kind, payload, active, poller, failures)
            down_since = time.monotonic()
            break
        now = time.monotonic()
        if got and now < next_check:
            continue
        if not got:
            poller.poll(100)
            if any(poller.poll(0)):  # (a message came: read it before judging anyone)
                continue
        now = time.monotonic()
        next_check = now + 0.1
        for producer in active:
            if producer.events():
                down_since = time.monotonic()  # (not before the connection's own clock: see check)
            producer.check(time.monotonic(), grace)
        if any(producer.delivering() for producer in active):
            down_since = now
        elif active and not got and now - down_since > grace and not any(p.handshaking() for p in active):
            raise PescadorError(
                f"remote: no producer has been delivering for {grace:g} s:\n{status}\n(lost: it went away; refused: "
                "the keys do not match; slow: its handshake did not finish; silent: connected but sent nothing, "
                "because it is slow to make its first item or another consumer connected to it took its items)"
            )
    if failures:
        raise _failed(failures)


_remote.pescador_resumes = False  # (read by pescador.resumable, which refuses such a source at once)
_remote.pescador_why_not = (
    "a remote() stream's items come from producers in other processes, which keep no state of where they "
    "are, so a run over them can neither say where it is nor start again from there"
)


def _failed(failures: list) -> Exception:
    """Every producer has ended and some failed (``(endpoint, wire.ErrorReport)`` each): the first one's error.

    Raised as its own type where it is a built-in exception, rebuilt from its
    plain arguments (nothing that came over the network is unpickled), with
    the producer's traceback in a :class:`~pescador.WorkerError` as its
    cause; otherwise as that :class:`~pescador.WorkerError`.
    """
    endpoint, report = failures[0]
    others = ", ".join(other for other, _ in failures[1:])
    when = f" (every producer has ended; {others} failed too, see the warnings)" if others else ""
    return wire.error_from(report, f"remote: producer {endpoint}", trusted=False, when=when)


def _retire(producer: _Producer, kind: int, payload: Any, active: list, poller: zmq.Poller, failures: list) -> None:
    """A producer's stream ended (END) or failed (its recipe raised): close it and count it out."""
    producer.events()
    if kind == wire.END:
        producer.close("ended", "ended")
    else:  # the producer's recipe raised: report it, and carry on with the others
        warnings.warn(
            f"remote: {producer.endpoint} failed; its traceback:\n{payload.text}", ProducerWarning, stacklevel=4
        )
        producer.close("failed", "its recipe raised")
        failures.append((producer.endpoint, payload))
    active.remove(producer)
    poller.unregister(producer.sock)


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
        ``tcp://HOST:PORT`` of each producer (needs keys, or
        ``insecure=True``), or ``ipc:///DIR/NAME`` for a producer on this
        machine, ``DIR`` being a directory only you can enter (checked when
        a run starts).
    key : path, optional
        This consumer's ``NAME.key_secret`` file.
    producer_keys : path or list of paths, optional
        The producers' public ``.key`` files: one for all, or one per
        endpoint.
    insecure : bool
        Allow plain TCP (loopback included), or an ``ipc://`` path in a
        directory that other users can enter (warns).
    grace : float
        Seconds without any producer delivering before the stream fails; a
        producer has as long for its handshake and, once connected, for its
        first item, before it is reported ``slow`` or ``silent``.
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
        raise ParameterTypeError(f"{where}: give at least one endpoint, e.g. remote('tcp://host:5555')")
    for endpoint in endpoints:
        _endpoint(endpoint, where)
    if not (isinstance(grace, (int, float)) and not isinstance(grace, bool) and grace > 0):
        raise (ParameterError if isinstance(grace, (int, float)) and not isinstance(grace, bool) else ParameterTypeError)(f"{where}: grace must be a positive number of seconds; got {grace!r}")
    if status is not None and not isinstance(status, RemoteStatus):
        raise ParameterTypeError(f"{where}: status must be a pescador.remote.RemoteStatus; got {type(status).__name__}")
    hwm = check_count(hwm, where, "hwm", minimum=1)
    if key is None and producer_keys is None and not insecure:
        _needs_curve(endpoints, False, False, where)  # refuses plain TCP now, not at the run
    return stream(
        _remote, tuple(endpoints), key=key, producer_keys=producer_keys, insecure=insecure, grace=float(grace),
        hwm=hwm, copy=bool(copy), status=status,
    )

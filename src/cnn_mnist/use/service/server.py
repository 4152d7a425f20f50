"""Running the service: the socket bound first (a bad host or a busy port is a one-line ServeError
before the model loads), then uvicorn until Ctrl-C (``serve``) or in a background thread for tests
and benchmarks (``running_server``)."""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from cnn_mnist.errors import ServeError
from cnn_mnist.use.service.routes import create_app
from cnn_mnist.use.service.settings import DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT

log = logging.getLogger(__name__)


def serve(model_dir: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, log_level: str = "info", device: str = "auto") -> None:
    """Load the model and answer requests until Ctrl-C.

    The socket is bound first, so a bad host or a port in use is a ServeError before the model
    loads, not uvicorn's own message and exit status."""
    sock = listen_socket(host, port)
    try:
        app = create_app(model_dir, max_body_bytes=max_body_bytes, device=device)
        log.info("Serving on %s: the page at /, POST /v1/predict, POST /v1/explain, GET /healthz (Ctrl-C stops)",
                 url_of(sock))
        uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening (``port`` 0: a free one), or a
    ServeError in one line saying what is wrong and what to do."""
    if not 0 <= port <= 65535:
        raise ServeError(f"port {port} is out of range; choose 0-65535 (0 picks a free port)")
    # IPv6 for an IPv6 literal, else IPv4 (a name such as localhost included), as uvicorn chooses.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise ServeError(f"cannot listen on --host {host!r}: unknown host ({getattr(err, 'strerror', None) or err}); "
                         "use an address of this machine, such as 127.0.0.1 (this machine only) or 0.0.0.0") from None
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as err:  # e.g. IPv6 turned off in the kernel
        raise ServeError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {bind_problem(err, port)}") from None
    return sock


def bind_problem(err: OSError, port: int) -> str:
    """Why binding failed, and what to do about it."""
    if err.errno == errno.EADDRINUSE:
        return f"port {port} is in use by another program; stop it, or choose another --port (0 picks a free one)"
    if err.errno == errno.EACCES:
        return f"port {port} needs more privileges than this user has; choose --port 1024 or above"
    if err.errno == errno.EADDRNOTAVAIL:
        return "that address is not one of this machine's; use 127.0.0.1, 0.0.0.0 or one of its own addresses"
    return err.strerror or str(err)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


@contextmanager
def running_server(app, host: str = DEFAULT_HOST, port: int = 0) -> Iterator[str]:
    """Serve ``app`` (a FastAPI app) from a background thread; yields its base URL (``port=0``: a
    free port).

    The socket is bound and listening before the thread starts, so the URL answers at once:
    early connections wait in the backlog until uvicorn picks them up.
    """
    sock = listen_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="cnn-mnist-server", daemon=True)
    thread.start()
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

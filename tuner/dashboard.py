"""``tuner dashboard``: optuna-dashboard on a study storage, read-only when asked.

optuna-dashboard has no authentication, and some of its endpoints change the study (delete a
study, tell a trial, edit notes, rename). :func:`refuse_writes` wraps its WSGI application so that
only GET and HEAD requests reach it; any other method gets ``405 Method Not Allowed``.
:func:`check_exposure` refuses to serve those endpoints on an address other than loopback unless
writes are allowed explicitly.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from optuna.storages import BaseStorage

from tuner.errors import DashboardError

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["SAFE_METHODS", "check_exposure", "is_loopback", "refuse_writes", "serve_dashboard"]

SAFE_METHODS = ("GET", "HEAD")
"""The methods a read-only dashboard answers; optuna-dashboard changes nothing on them."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another host name: it may resolve to anything
        return False


def check_exposure(host: str, *, read_only: bool, allow_writes: bool) -> None:
    """Refuse a dashboard that anyone on the network could change studies through."""
    if read_only and allow_writes:
        raise DashboardError("read_only and allow_writes contradict each other; give one of them")
    if not (read_only or allow_writes or is_loopback(host)):
        raise DashboardError(
            f"a dashboard bound to {host!r} would let anyone who reaches it delete and change "
            "studies (it has no authentication); serve it read_only, bind 127.0.0.1 (and use "
            "an SSH tunnel), or set allow_writes if a proxy with authentication guards it"
        )


def refuse_writes(app: WSGIApplication) -> WSGIApplication:
    """``app`` for GET and HEAD; ``405 Method Not Allowed`` (``Allow: GET, HEAD``) for the rest."""
    body = json.dumps({"reason": "this dashboard is read-only: it changes nothing"}).encode()
    headers = [
        ("Allow", ", ".join(SAFE_METHODS)),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if str(environ.get("REQUEST_METHOD", "")).upper() in SAFE_METHODS:
            return app(environ, start_response)
        start_response("405 Method Not Allowed", headers)
        return [body]

    return guarded


def serve_dashboard(storage: BaseStorage, *, host: str, port: int, read_only: bool) -> None:
    """Serve optuna-dashboard until interrupted, as its ``run_server`` does (Bottle's wsgiref
    server), read-only when asked."""
    import bottle
    from optuna_dashboard import wsgi

    app = wsgi(storage)
    bottle.run(refuse_writes(app) if read_only else app, host=host, port=port)

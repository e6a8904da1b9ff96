"""Requests the service sends to addresses its users give (webhooks): never to the inside.

A ``callback_url`` must not reach what only the service can reach: loopback, private
networks, link-local addresses (cloud metadata at 169.254.169.254), or any other address
that is not globally routable. The URL is checked when it is given (a 400 for the user),
and the check is made again where it matters, on the connection itself: the address a
socket connected to is checked before a byte is sent, so a name that resolved to a
public address when the job was submitted and to a private one at delivery time (DNS
rebinding) is refused all the same. Redirects are never followed.

``WEBHOOK_ALLOW_PRIVATE=true`` lifts the rule (a service whose receivers live on its own
network; the tests).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection


class RefusedAddress(ValueError):
    """The URL's host is, or resolves to, an address that is not public."""


def _not_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_public(url: str) -> None:
    """Raise RefusedAddress unless every address the URL's host resolves to is public
    (or WEBHOOK_ALLOW_PRIVATE is set)."""
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise RefusedAddress("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise RefusedAddress(f"{host} does not resolve: {exc}") from exc
    for *_, sockaddr in found:
        if _not_public(sockaddr[0]):
            raise RefusedAddress(f"{host} resolves to {sockaddr[0]}, which is not a public "
                                 "address (set WEBHOOK_ALLOW_PRIVATE=true to allow it)")


def _check_peer(sock: socket.socket) -> None:
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return
    address = sock.getpeername()[0]
    if _not_public(address):
        sock.close()
        raise RefusedAddress(f"the connection went to {address}, which is not a public address")


class _PeerChecked:
    """For a urllib3 connection class: the connected socket's peer is checked."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _check_peer(sock)
        return sock


class _GuardedHTTPConnection(_PeerChecked, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_PeerChecked, HTTPSConnection):
    pass


class _GuardedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool,
                                                   "https": _GuardedHTTPSPool}


def post(url: str, **kwargs) -> requests.Response:
    """requests.post to a user's URL: public addresses only, no redirects, no proxies
    from the environment (the connection must be the one that is checked)."""
    check_public(url)
    with requests.Session() as session:
        session.trust_env = False
        adapter = _GuardedAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session.post(url, allow_redirects=False, **kwargs)

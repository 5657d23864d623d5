"""Server-side HTTP requests that cannot be aimed at internal addresses (SSRF-safe).

Every hop: the host is resolved once, *every* resolved address must be public, and the socket is
opened to that checked address (the original host travels in ``Host`` and TLS SNI, so
certificates are still verified against the name). A DNS answer that changes between check and
connect (rebinding) therefore cannot redirect the request. Redirects are followed by hand and
each target is checked again. Bytes and total time are capped.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import urljoin, urlsplit

import httpx

from restora.errors import InputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_ULA = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
             ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("192.0.0.192")}


class BlockedURL(InputError):
    """The URL is not http(s) or points at an address the server must not reach."""

    code = "url_blocked"
    http_status = 400


class FetchError(InputError):
    """The remote server could not be fetched (network error, status, size or time)."""

    code = "fetch_failed"
    http_status = 400


def blocked_reason(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` must not be contacted, or None if it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = None
        if ip.ipv4_mapped is not None:
            embedded = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            embedded = ip.sixtofour
        elif ip.teredo is not None:
            embedded = ip.teredo[1]
        elif ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip in _NAT64_LOCAL:
            return "local-use NAT64"
        if embedded is not None:
            inner = blocked_reason(embedded, allow_loopback=allow_loopback)
            return None if inner is None else f"{inner} (IPv4 inside IPv6)"
    if ip in _METADATA:
        return "cloud metadata"
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _ULA:
        return "unique local"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


@dataclass(frozen=True)
class Target:
    """A checked hop: where to connect and what to tell the server."""

    url: str
    scheme: str
    host: str  # the name as given (for Host / SNI)
    port: int
    address: IPAddress  # the checked address the socket goes to


def check_url(url: str, *, allow_loopback: bool = False,
              schemes: Iterable[str] = ("http", "https")) -> Target:
    """Parse, resolve once and vet ``url``; raise :class:`BlockedURL` when it is not allowed."""
    if not isinstance(url, str) or len(url) > 4096 or any(c in url for c in "\r\n\t\x00 "):
        raise BlockedURL("The URL is malformed.", url=str(url)[:200])
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BlockedURL(f"The URL is malformed: {exc}.", url=url[:200]) from None
    scheme = parts.scheme.lower()
    if scheme not in tuple(schemes):
        raise BlockedURL(f"Only {' and '.join(schemes)} URLs are allowed.", url=url[:200])
    if parts.username is not None or parts.password is not None:
        raise BlockedURL("Credentials in URLs are not allowed.", url=url[:200])
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise BlockedURL("The URL has no host.", url=url[:200])
    port = port or (443 if scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise BlockedURL(f"The host '{host}' does not resolve ({exc}).", url=url[:200]) from None
    addresses: list[IPAddress] = []
    for info in infos:
        raw = str(info[4][0]).split("%")[0]
        addresses.append(ipaddress.ip_address(raw))
    if not addresses:
        raise BlockedURL(f"The host '{host}' does not resolve.", url=url[:200])
    # All answers must be public: otherwise a name with one public and one private record
    # could be steered to the private one.
    for ip in addresses:
        reason = blocked_reason(ip, allow_loopback=allow_loopback)
        if reason is not None:
            raise BlockedURL(f"The URL points at {ip}, a {reason} address, which is not allowed.",
                             url=url[:200], address=str(ip), reason=reason)
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])


def _pinned_request(client: httpx.Client, method: str, target: Target, *,
                    headers: dict[str, str] | None = None, content: bytes | None = None,
                    timeout: float) -> httpx.Request:
    pinned = httpx.URL(target.url).copy_with(host=target.address.compressed, port=target.port)
    default_port = 443 if target.scheme == "https" else 80
    host_header = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != default_port:
        host_header += f":{target.port}"
    hdrs = {"Host": host_header, "User-Agent": "restora", **(headers or {})}
    extensions = {}
    if target.scheme == "https":
        extensions["sni_hostname"] = target.host  # TLS name check against the real host
    return client.build_request(method, pinned, headers=hdrs, content=content,
                                timeout=httpx.Timeout(timeout), extensions=extensions)


@dataclass
class Fetched:
    content: bytes
    content_type: str
    url: str  # final URL after redirects


def fetch(url: str, *, max_bytes: int, timeout_s: float, max_redirects: int = 3,
          allow_loopback: bool = False) -> Fetched:
    """GET ``url`` safely: vetted hops, manual redirects, byte and wall-time caps."""
    deadline = time.monotonic() + timeout_s
    current = url
    with httpx.Client(trust_env=False, follow_redirects=False, verify=True) as client:
        for _hop in range(max_redirects + 1):
            target = check_url(current, allow_loopback=allow_loopback)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(f"Fetching the URL took longer than {timeout_s:g} s.", url=url)
            request = _pinned_request(client, "GET", target, timeout=remaining)
            try:
                response = client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise FetchError(f"Could not fetch the URL: {exc}.", url=url) from None
            try:
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError("The server redirected without a Location.", url=url)
                    current = urljoin(current, location)
                    continue
                if response.status_code != 200:
                    raise FetchError(f"The URL answered HTTP {response.status_code}.", url=url,
                                     status=response.status_code)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"The remote file is larger than {max_bytes:,} bytes.",
                                     url=url)
                chunks: list[bytes] = []
                total = 0
                for chunk in response.iter_bytes():
                    total += len(chunk)
                    if total > max_bytes:
                        raise FetchError(f"The remote file is larger than {max_bytes:,} bytes.",
                                         url=url)
                    if time.monotonic() > deadline:
                        raise FetchError(f"Fetching the URL took longer than {timeout_s:g} s.",
                                         url=url)
                    chunks.append(chunk)
                return Fetched(content=b"".join(chunks),
                               content_type=response.headers.get("content-type", ""), url=current)
            except httpx.HTTPError as exc:
                raise FetchError(f"Could not fetch the URL: {exc}.", url=url) from None
            finally:
                response.close()
    raise FetchError(f"More than {max_redirects} redirects.", url=url)


def post_json(url: str, body: bytes, headers: dict[str, str], *, timeout_s: float,
              allow_loopback: bool = False, schemes: Iterable[str] = ("https",)) -> int:
    """POST to a vetted address without following redirects; returns the HTTP status."""
    target = check_url(url, allow_loopback=allow_loopback, schemes=schemes)
    with httpx.Client(trust_env=False, follow_redirects=False, verify=True) as client:
        request = _pinned_request(client, "POST", target, timeout=timeout_s,
                                  headers={"Content-Type": "application/json", **headers},
                                  content=body)
        try:
            response = client.send(request)
        except httpx.HTTPError as exc:
            raise FetchError(f"Could not reach {target.host}: {exc}.", url=url) from None
        return response.status_code

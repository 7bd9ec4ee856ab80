"""Which IP addresses clip-gaze may fetch from, and which hosts an allow-list admits (used by `fetch`).

Pure functions over addresses: nothing here resolves a name or opens a connection.
"""

from __future__ import annotations

import ipaddress

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def refusal(address: str) -> str | None:
    """Why fetching from this IP address is refused ("loopback", "private", …), or None when it is public.

    An IPv4 address carried inside IPv6 (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d, 6to4
    2002:…) is judged as that IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return refusal(str(ip.ipv4_mapped))
        if ip in _NAT64:
            return refusal(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        if ip.sixtofour is not None and refusal(str(ip.sixtofour)) is not None:
            return f"6to4-wrapped {refusal(str(ip.sixtofour))}"
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED, "shared (carrier-grade NAT)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "site-local"),
        (not ip.is_global, "non-global"),
    )
    return next((kind for hit, kind in checks if hit), None)


def is_public(address: str) -> bool:
    """True when `address` (an IP address) is one clip-gaze may fetch from without an allow-list entry."""
    return refusal(address) is None


def is_allowed(host: str, port: int, allow: frozenset[str] | set[str] | tuple[str, ...]) -> bool:
    """`host` (or `host:port`) is listed: `host` admits every port, `host:port` only that one.
    Case-insensitive; an IPv6 host is written bare (`::1`, every port) or bracketed (`[::1]:8080`)."""
    host = host.lower().rstrip(".")
    for entry in allow:
        entry = entry.strip().lower()
        if not entry.isascii():
            try:
                entry = entry.encode("idna").decode("ascii")
            except UnicodeError:
                continue
        if entry.startswith("["):
            name, _, rest = entry[1:].partition("]")
            want_port = rest[1:] if rest.startswith(":") else ""
        elif entry.count(":") == 1:
            name, _, want_port = entry.partition(":")
        else:
            name, want_port = entry, ""
        if name.rstrip(".") == host and (not want_port or want_port == str(port)):
            return True
    return False

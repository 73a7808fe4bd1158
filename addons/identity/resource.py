"""The gateway as an OAuth protected resource (RFC 9728, as MCP's authorization spec uses it):
the metadata document that tells a client which authorization server issues tokens for it,
where that document lives, and the audiences such tokens carry (RFC 8707). Pure: no mitmproxy.

With `toolgate_resource=https://gw.example/mcp`, the document is served at
`/.well-known/oauth-protected-resource/mcp` (the path form of RFC 9728 section 3.1), at the
root form `/.well-known/oauth-protected-resource`, and for paths below the resource's (a
client whose endpoint is `/mcp/x` looks there and accepts its parent resource).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

WELL_KNOWN = "/.well-known/oauth-protected-resource"
DEFAULT_PORTS = {"http": 80, "https": 443}
# What goes into a quoted-string of WWW-Authenticate unescaped: printable ASCII but for `"`
# and `\` (and no blanks, which a URL cannot hold anyway).
_HEADER_SAFE = re.compile(r"[!#-\[\]-~]+")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ProtectedResource:
    """This gateway's resource identifier and the authorization server that issues its tokens."""

    resource: str
    authorization_server: str

    @classmethod
    def parse(cls, resource: str, authorization_server: str) -> "ProtectedResource":
        """ValueError says what to fix."""
        resource = resource.strip()
        parts = urllib.parse.urlsplit(resource)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"toolgate_resource {resource!r} is not an http(s) URL, e.g. "
                             "https://gateway.example/mcp")
        if parts.query or parts.fragment or "#" in resource or "?" in resource:
            raise ValueError(f"toolgate_resource {resource!r}: a resource identifier has no "
                             "query or fragment (RFC 8707)")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"toolgate_resource {resource!r}: no user or password in the URL")
        if not _HEADER_SAFE.fullmatch(resource):
            raise ValueError(f"toolgate_resource {resource!r}: use a URL made of printable "
                             "ASCII characters (percent-encode the rest)")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError as exc:
            raise ValueError(f"toolgate_resource {resource!r}: {exc}") from None
        if not authorization_server:
            raise ValueError("toolgate_resource needs toolgate_oidc_issuer: the metadata names "
                             "it as the authorization server where clients log in")
        return cls(resource, authorization_server)

    @property
    def _parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.resource)

    @property
    def path(self) -> str:
        """The resource's path, without the slash that only ends the authority."""
        path = self._parts.path
        return "" if path == "/" else path

    @property
    def metadata_url(self) -> str:
        """Where the metadata document is (RFC 9728 section 3.1): the well-known prefix goes
        between the authority and the resource's path."""
        parts = self._parts
        return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{self.path}"

    @property
    def audiences(self) -> tuple[str, ...]:
        """The `aud` values that name this resource: as configured, and in the normal form
        clients send (RFC 3986 section 6.2.2/6.2.3: lower-case scheme and host, no default
        port, an empty path is `/`; the MCP SDK sends `https://gw.example/` for a root
        resource configured as `https://gw.example`)."""
        parts = self._parts
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = parts.port
        netloc = host if port in (None, DEFAULT_PORTS[parts.scheme.lower()]) else f"{host}:{port}"
        normal = f"{parts.scheme.lower()}://{netloc}{parts.path or '/'}"
        found = [self.resource, normal]
        if normal.endswith("://" + netloc + "/"):  # a root resource, with and without its slash
            found.append(normal[:-1])
        return tuple(dict.fromkeys(found))

    def document(self) -> dict[str, Any]:
        """The metadata (RFC 9728 section 2). Tokens go in the Authorization header only: the
        gateway reads no token from a query or a form body."""
        return {
            "resource": self.resource,
            "authorization_servers": [self.authorization_server],
            "bearer_methods_supported": ["header"],
            "resource_name": "toolgate",
        }

    def serves(self, path: str) -> bool | None:
        """Whether a request path (without its query) is this resource's metadata document
        (True), another well-known metadata path the gateway answers 404 (False), or none of
        them (None: not the gateway's business)."""
        if path != WELL_KNOWN and not path.startswith(WELL_KNOWN + "/"):
            return None
        suffix = path[len(WELL_KNOWN):]
        mine = self.path.rstrip("/")
        return suffix in ("", "/") or suffix.rstrip("/") == mine or suffix.startswith(mine + "/")

"""HTTP to the gateway's admin API, for the command line: one place that sends a request and
turns a refusal or a silence into something a user can act on."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class AdminRefused(Exception):
    """The admin API answered with an error; the message is its reason."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class AdminUnreachable(Exception):
    """The admin API did not answer (nothing listens, a timeout, not JSON)."""


def admin_json(
    url: str,
    token: str | None,
    *,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Any:
    """The JSON answer to one request on the admin API."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Accept": "application/json", **(headers or {})})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        if exc.code == 401 and token:  # without one, the API's own message says to send it
            message += " (pass a valid token: --token TOKEN or $TOOLGATE_TOKEN)"
        raise AdminRefused(message, exc.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise AdminUnreachable(str(getattr(exc, "reason", exc))) from None

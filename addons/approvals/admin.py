"""The admin API: a small JSON API on `toolgate_admin_listen`, never on the proxy's own port.

It runs on mitmproxy's own event loop (tornado, which mitmproxy already ships), so a slow
reviewer or a slow token check never blocks traffic. Every request but `GET /healthz` carries
`Authorization: Bearer <OIDC token>`, verified by the identity addon's verifier exactly like a
caller's; which reviewer may decide what is `holds.check_reviewer`'s business.

Routes (answers are JSON; errors are `{"error": {"code", "message"}}`):

- `GET /healthz` (no token: liveness probes have none) and `GET /metrics` (Prometheus text of
  the metrics addon's registry: `addons/telemetry/metrics.py`);
- `GET /api/approvals`, `GET /api/approvals/{id}`, `POST /api/approvals/{id}/approve`
  (`{"reason", "for": "30m", "scope": "same-args"|"any-args"}`), `POST .../deny`
  (`{"reason"}`), `GET /api/grants`;
- the session store's routes (`/api/calls`, `/api/sessions/{id}`, `/api/report`,
  `/api/findings`, `/api/verify`): a provider registered with `register_route`, else the
  recorder addon's `query(path, params)`, else 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from mitmproxy import ctx, exceptions
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from toolgate.addons import settings
from toolgate.addons.approvals.holds import ReviewError, parse_grant_window
from toolgate.addons.identity.oidc import IdentityError, bearer_token
from toolgate.addons.telemetry.metrics import admin_families, approval_families, state_registry

logger = logging.getLogger(__name__)

DEFAULT_ADMIN_LISTEN = "127.0.0.1:8090"
MAX_BODY = 64 * 1024
CHANNEL_HEADER = "X-Toolgate-Channel"  # the CLI says so; anything else is `admin`
SESSION_PATHS = (
    "/api/calls", "/api/calls/full", "/api/sessions/", "/api/report", "/api/findings", "/api/verify",
)


@dataclass
class AdminRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    identity: dict[str, Any] | None = None  # the verified reviewer
    params: dict[str, str] = field(default_factory=dict)  # from the route's pattern


Answer = tuple[int, Any]  # (status, JSON document, or str for text/plain)
Handler = Callable[[AdminRequest], Awaitable[Answer]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool = True


class Admin:
    def __init__(self, identity: Any = None, approvals: Any = None) -> None:
        self.identity, self.approvals = identity, approvals
        self.address = settings.parse_listen(DEFAULT_ADMIN_LISTEN)
        self.url: str | None = None
        self.requests: Counter[int] = Counter()  # status -> n
        self._server: tornado.httpserver.HTTPServer | None = None
        self._routes: list[Route] = []  # registered by others: the first match wins
        self._builtin = [
            Route("GET", _exact("/healthz"), self._healthz, auth=False),
            Route("GET", _exact("/metrics"), self._metrics),
            Route("GET", _exact("/api/approvals"), self._list),
            Route("GET", _exact("/api/grants"), self._grants),
            Route("GET", re.compile(r"/api/approvals/(?P<id>[\w.-]+)"), self._show),
            Route("POST", re.compile(r"/api/approvals/(?P<id>[\w.-]+)/approve"), self._approve),
            Route("POST", re.compile(r"/api/approvals/(?P<id>[\w.-]+)/deny"), self._deny),
        ]

    def load(self, loader) -> None:
        loader.add_option(
            "toolgate_admin_listen", str, DEFAULT_ADMIN_LISTEN,
            "HOST:PORT of the admin API (approvals, live session queries, health, metrics); "
            "port 0 picks a free one, logged at start. Keep it on loopback or behind TLS.",
        )

    def configure(self, updated: set[str]) -> None:
        if "toolgate_admin_listen" not in updated:
            return
        try:
            address = settings.parse_listen(ctx.options.toolgate_admin_listen)
            if address[1] != 0 and address[1] == ctx.options.listen_port:
                raise ValueError("toolgate_admin_listen must not be the proxy's own port")
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from None
        if address != self.address and self._server is not None:
            self.done()
            self.address = address
            self.running()
        self.address = address

    def running(self) -> None:
        if self._server is not None:
            return
        host, port = self.address
        try:
            sockets = tornado.netutil.bind_sockets(port, host)
        except OSError as exc:
            # Not fatal for traffic: held calls can still be decided in mitmweb, or time out.
            logger.error("toolgate: the admin API cannot listen on %s:%s: %s", host, port, exc)
            return
        app = tornado.web.Application([(r"/.*", _AdminHandler, {"admin": self})],
                                      log_function=lambda handler: None)
        self._server = tornado.httpserver.HTTPServer(app, max_body_size=MAX_BODY,
                                                     idle_connection_timeout=60)
        self._server.add_sockets(sockets)
        bound = sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}"
        if self.approvals is not None:
            self.approvals.admin_url = self.url
        logger.info("toolgate admin API serving at %s", self.url)

    def done(self) -> None:
        if self._server is not None:
            self._server.stop()  # stops listening; open connections end on their own
            self._server = None

    def register_route(self, method: str, path: str, handler: Handler, *,
                       prefix: bool = False, auth: bool = True) -> None:
        """Serve `method path` (or every path under `path` with `prefix`) with `handler`, an
        `async (AdminRequest) -> (status, JSON document)`. For the session store's routes."""
        pattern = re.compile(re.escape(path) + (".*" if prefix else ""))
        self._routes.append(Route(method.upper(), pattern, handler, auth))

    # -- dispatch ----------------------------------------------------------------------------

    async def dispatch(self, request: AdminRequest) -> Answer:
        status, body = await self._dispatch(request)
        self.requests[status] += 1
        return status, body

    async def _dispatch(self, request: AdminRequest) -> Answer:
        route, allowed = self._route(request)
        if route is None:
            if allowed:
                return _error(405, "bad_request", f"{request.path} accepts {', '.join(allowed)}")
            return _error(404, "not_found", f"no route {request.method} {request.path}")
        if route.auth:
            try:
                request.identity = await self._verify(request.headers.get("Authorization"))
            except IdentityError as exc:
                return _error(401, "identity", str(exc))
        try:
            return await route.handler(request)
        except ReviewError as exc:
            return _error(exc.status, exc.code, exc.message)

    def _route(self, request: AdminRequest) -> tuple[Route | None, list[str]]:
        allowed: list[str] = []
        candidates = self._routes + self._builtin + [
            Route("GET", re.compile(re.escape(p) + (".+" if p.endswith("/") else "")),
                  self._sessions) for p in SESSION_PATHS
        ]
        for route in candidates:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            request.params = match.groupdict()
            return route, allowed
        return None, allowed

    async def _verify(self, header: str | None) -> dict[str, Any]:
        if not header:
            raise IdentityError("no bearer token: send 'Authorization: Bearer <token>' "
                                "(toolgate approvals ... --token, or $TOOLGATE_TOKEN)")
        identity = self.identity or ctx.master.addons.get("identity")
        verifier = getattr(identity, "verifier", None)
        if verifier is None:
            raise IdentityError("this gateway verifies no tokens (toolgate_identity=off), so "
                                "its admin API accepts nobody: decide held calls in mitmweb")
        return (await verifier.verify(bearer_token(header))).as_dict()

    # -- routes ------------------------------------------------------------------------------

    async def _healthz(self, request: AdminRequest) -> Answer:
        recorder = ctx.master.addons.get("recorder")
        health = getattr(recorder, "health", None)
        approvals = self._approvals()
        fleet = approvals.fleet.health() if approvals.fleet is not None else None
        return 200, {"ok": True, "node": _node(), "held": len(approvals.held),
                     "store": health() if callable(health) else None, "control": fleet}

    async def _metrics(self, request: AdminRequest) -> Answer:
        """Prometheus text of the metrics addon's registry (calls, and the gateway's state
        read now); without that addon, of the state alone."""
        metrics = ctx.master.addons.get("metrics")
        registry = getattr(metrics, "registry", None) or state_registry(self._approvals(), self)
        return 200, generate_latest(registry).decode()

    async def _list(self, request: AdminRequest) -> Answer:
        approvals = self._approvals()
        if approvals.fleet is not None:  # every node's
            return 200, {"approvals": [h.summary() for h in await approvals.fleet_pending()]}
        return 200, {"approvals": [h.summary() for h in approvals.held.pending()]}

    async def _grants(self, request: AdminRequest) -> Answer:
        return 200, {"grants": [g.as_json() for g in
                                self._approvals().grants.active(time.time())]}

    async def _show(self, request: AdminRequest) -> Answer:
        approvals = self._approvals()
        if approvals.fleet is not None:
            held = await approvals.fleet_held(request.params["id"])
        else:
            held = approvals.held.get(request.params["id"])
        if held is None:
            return _error(404, "not_found", f"no held call {request.params['id']}")
        return 200, held.detail(time.time())

    async def _approve(self, request: AdminRequest) -> Answer:
        body = _json_body(request)
        try:
            window = parse_grant_window(body.get("for"))
        except ValueError as exc:
            raise ReviewError(400, "bad_request", f"for: {exc}") from None
        scope = body.get("scope", "any-args" if window else "call")
        if scope not in ("call", "same-args", "any-args"):
            raise ReviewError(400, "bad_request", "scope must be call, same-args or any-args")
        if window is None and scope != "call":
            raise ReviewError(400, "bad_request", f"scope {scope} needs a time window (\"for\")")
        if window is not None and scope == "call":
            raise ReviewError(400, "bad_request", "a one-call approval has no time window")
        held, verdict = await self._approvals().review(
            "approve", request.params["id"], request.identity or {}, _reason(body), window,
            scope == "same-args", _channel(request))
        return 200, {"id": held.id, "call_id": held.call_id, **verdict.as_json()}

    async def _deny(self, request: AdminRequest) -> Answer:
        body = _json_body(request)
        held, verdict = await self._approvals().review(
            "deny", request.params["id"], request.identity or {}, _reason(body),
            channel=_channel(request))
        return 200, {"id": held.id, "call_id": held.call_id, **verdict.as_json()}

    async def _sessions(self, request: AdminRequest) -> Answer:
        recorder = ctx.master.addons.get("recorder")
        query = getattr(recorder, "query", None)
        if not callable(query):
            return _error(503, "unavailable", f"{request.path} is served by the session store, "
                          "and this gateway has none registered")
        try:
            status, body = await asyncio.wrap_future(query(request.path, request.query))
        except Exception as exc:  # noqa: BLE001 - the store's failure is the caller's 503
            logger.error("toolgate: the session store failed on %s: %s", request.path, exc)
            return _error(503, "unavailable", f"the session store cannot answer: {exc}")
        return status, body

    def _approvals(self) -> Any:
        approvals = self.approvals or ctx.master.addons.get("approvals")
        if approvals is None:
            raise ReviewError(503, "unavailable", "the approvals addon is not loaded")
        return approvals


class _AdminHandler(tornado.web.RequestHandler):
    """Tornado is only the transport: everything is decided in `Admin.dispatch`."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")

    def initialize(self, admin: Admin) -> None:
        self.admin = admin

    async def _any(self, *args: Any) -> None:
        r = self.request
        query = {k: v[-1].decode("utf-8", "replace") for k, v in r.query_arguments.items()}
        try:
            status, body = await self.admin.dispatch(AdminRequest(
                r.method or "GET", r.path, query, r.headers, r.body or b""))
        except Exception:
            logger.exception("toolgate: the admin API failed on %s %s", r.method, r.path)
            status, body = _error(500, "internal", "the admin API failed; see the gateway's log")
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        if isinstance(body, str):
            self.set_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
            self.finish(body)
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(body, default=str))

    get = post = put = delete = patch = head = _any  # type: ignore[assignment]


def metrics_text(approvals: Any, requests: Mapping[int, int], now: float) -> str:
    """Prometheus text of the approvals addon's state and of admin API requests."""
    registry = CollectorRegistry()
    registry.register(_Families([*approval_families(approvals, now), *admin_families(requests)]))
    return generate_latest(registry).decode()


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _node() -> str | None:
    try:
        return settings.node_id(ctx.options)
    except (ValueError, AttributeError):
        return None


def _exact(path: str) -> re.Pattern[str]:
    return re.compile(re.escape(path))


def _error(status: int, code: str, message: str) -> Answer:
    return status, {"error": {"code": code, "message": message}}


def _json_body(request: AdminRequest) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        body = json.loads(request.body)
    except ValueError:
        raise ReviewError(400, "bad_request", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ReviewError(400, "bad_request", "the body must be a JSON object")
    return body


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ReviewError(400, "bad_request", "reason must be a string")
    return reason or ""


def _channel(request: AdminRequest) -> str:
    return "cli" if request.headers.get(CHANNEL_HEADER, "").lower() == "cli" else "admin"

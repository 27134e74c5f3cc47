"""What each request leaves behind: one access log line (`api.access`), in place of uvicorn's,
and its metrics (api.core.metrics): its latency by method, route template and status class,
whose count is the request count, and the requests in flight.

The line names the route's template (`/products/{product_id}`), never the raw path or its query
string, so no token, password or id typed into a URL reaches the log; `unmatched` stands for a
path no route has (and for a request refused before routing: a 413, a bad Content-Length). The
client address is the connection's, or the one a trusted proxy forwarded: uvicorn's
`--proxy-headers` with `FORWARDED_ALLOW_IPS` decides, before the app sees the request.
"""

from time import perf_counter

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core import logging, metrics

UNMATCHED = "unmatched"
# The orchestrators' polls and Prometheus' scrapes (GET): left out of the access log unless
# ACCESS_LOG_PROBES.
PROBES = frozenset({"/health", "/health/ready", "/metrics"})
USER_ID = "user_id"  # the request state's key for the authenticated user


def route_template(scope: Scope) -> str:
    """The path template of the route that answered, or `unmatched`."""
    return getattr(scope.get("route"), "path_format", None) or UNMATCHED


def record_user(request: Request, user_id: int) -> None:
    """The authenticated caller, for the request's access line."""
    setattr(request.state, USER_ID, user_id)


class ObserveRequests:
    """Times each HTTP request; once the answer is sent (or the app raised: Starlette then
    answers 500) writes its access line and counts it."""

    def __init__(self, app: ASGIApp, *, access_log: bool, log_probes: bool, metrics: bool) -> None:
        self.app = app
        self.access_log = access_log
        self.log_probes = log_probes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if self.metrics:
            metrics.REQUESTS_IN_FLIGHT.started()
        started = perf_counter()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            seconds = perf_counter() - started
            route = route_template(scope)
            if self.metrics:
                metrics.REQUESTS_IN_FLIGHT.finished()
                metrics.observe_request(scope["method"], route, status, seconds)
            self.log(scope, route, status, seconds)

    def log(self, scope: Scope, route: str, status: int, seconds: float) -> None:
        access = logging.ACCESS
        if not self.access_log or access is None:
            return
        if not self.log_probes and scope["path"] in PROBES and scope["method"] == "GET":
            return
        client = scope.get("client")
        access.info(
            "request",
            method=scope["method"],
            route=route,
            status=status,
            duration_ms=round(seconds * 1000, 2),
            user_id=scope.get("state", {}).get(USER_ID),
            client=client[0] if client else None,
        )

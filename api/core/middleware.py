"""The app's own ASGI middleware.

BodySizeLimit refuses request bodies above `MAX_BODY_BYTES` with a 413 problem body, before
anything parses them (uvicorn has no limit of its own).

A declared Content-Length over the limit is refused without reading a byte. A body without one
(chunked) is read up to the limit, refused as soon as it passes it, and otherwise replayed to the
app. FastAPI's own `max_body_size` answers the declared case in plain text, so it is not used.
"""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.errors import problem_response


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                response = problem_response(
                    400, "bad_request", "Content-Length is not a number.", instance=scope["path"]
                )
                await response(scope, receive, send)
            elif int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        size = 0
        more = True
        while more:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            more = message.get("more_body", False)

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            "request_entity_too_large",
            f"The request body is larger than {self.max_bytes} bytes.",
            instance=scope.get("path"),
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class SlashOptional:
    """A collection answers `/products` as it answers `/products/`, instead of a 307 to the
    slashed path: a client need not follow a redirect (which some do not for a POST), nor pay a
    round trip for it. `paths` are the collections' paths without their slash."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # In place, not on a copy: the middleware around this one read what routing writes in
        # the scope (the route that answered, for the access line and the metrics).
        if scope["type"] == "http" and scope["path"] in self.paths:
            scope["path"] += "/"
            if "raw_path" in scope:
                scope["raw_path"] += b"/"
        await self.app(scope, receive, send)

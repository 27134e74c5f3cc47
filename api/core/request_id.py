"""Request ids: every answer carries `X-Request-ID`, and so do its problem body and every log
line written while it is handled, so that a client's bug report leads to the server's log.

asgi-correlation-id's middleware keeps the client's id when it is well formed and makes a new
one otherwise (a malformed one is replaced, never echoed); the id of the request being handled
is its context variable, which `current()` reads.
"""

import os
import re
from collections.abc import MutableMapping
from typing import Any

from asgi_correlation_id import correlation_id

HEADER = "X-Request-ID"

# A UUID (hex, hyphenated or urn:uuid:) fits too. Nothing that could split a header or a log
# line, quote its way out of JSON, or fill a log with a long value.
WELL_FORMED = re.compile(r"[A-Za-z0-9._~:+/=-]{1,64}")


def new() -> str:
    """A new id: 128 random bits in hex, 32 characters (uuid4().hex, the middleware's default,
    has the same form and builds a UUID object for it). The bits are the operating system's
    CSPRNG's, which `secrets.token_hex(16)` reads through three Python calls."""
    return os.urandom(16).hex()


def well_formed(value: str) -> bool:
    """Whether a client's id is kept: 1 to 64 letters, digits or `._~:+/=-`."""
    return WELL_FORMED.fullmatch(value) is not None


def current() -> str | None:
    """The id of the request being handled (None outside a request, or with REQUEST_IDS off)."""
    return correlation_id.get()


def add_to_log(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the request's id on every line written while it is handled."""
    if (request_id := correlation_id.get()) is not None:
        event.setdefault("request_id", request_id)
    return event

"""Path types for a segment that several routers' paths share."""

import re
from collections.abc import Iterable

from starlette.convertors import StringConvertor, register_url_convertor


def segment_except(name: str, words: Iterable[str]) -> str:
    """Register the path type `name`, one segment other than `words`, and answer its name: in
    `/users/{user_id:name}` a literal path beside it (`/users/me`) never reaches the id route,
    whichever router is tried first, while any other segment does and is validated as the
    parameter's type (`/users/abc` is a 422)."""
    alternatives = "|".join(re.escape(word) for word in sorted(words))

    class SegmentExcept(StringConvertor):
        regex = rf"(?!(?:{alternatives})(?:/|$))[^/]+"

    register_url_convertor(name, SegmentExcept())
    return name

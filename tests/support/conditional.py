"""Conditional requests in tests: the tag a read sends, and one no resource has."""

import httpx

from api.core.conditional import etag

# A well-formed strong tag that no representation hashes to.
STALE = '"0123456789abcdef0123456789abcdef"'


async def tag_of(client: httpx.AsyncClient, url: str) -> str:
    """The ETag a GET of `url` answers, checked to be the tag of the body it came with."""
    response = await client.get(url)
    assert response.status_code == 200, response.text
    tag = response.headers["ETag"]
    assert tag == etag(response.content)
    return tag

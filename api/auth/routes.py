"""Login over HTTP: the OAuth2 password flow."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from api.auth import service
from api.auth.models import Token
from api.core.db import SessionDep
from api.core.errors import responses
from api.core.routing import api_router

router = api_router(prefix="/auth", tags=["auth"])


@router.post("/token", responses=responses(401, 429))
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, session: SessionDep
) -> Token:
    """Log in with a username or email and a password; answers a bearer token."""
    return await service.authenticate(
        session=session,
        sessionmaker=request.app.state.sessionmaker,
        identifier=form.username,
        password=form.password,
        # The client's address as uvicorn resolves it: behind a proxy trusted by
        # FORWARDED_ALLOW_IPS, the one that proxy forwarded.
        address=request.client.host if request.client else "unknown",
        settings=request.app.state.settings,
    )

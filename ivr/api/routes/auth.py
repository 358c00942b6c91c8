"""POST /api/auth/token: the OAuth2 password flow."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from ivr.api.auth import authenticate, issue_token

router = APIRouter(prefix="/api/auth", tags=["auth"])


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"


@router.post("/token", response_model=Token, summary="Log in: user name and password for a token")
async def token(request: Request,
                form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> Token:
    state = request.app.state
    user = await authenticate(state.sessions, form.username, form.password)
    if user is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="wrong user name or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = state.settings.jwt_secret()
    return Token(access_token=issue_token(user, key, state.settings.token_minutes))

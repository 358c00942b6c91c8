"""Log-in and log-out: a bearer token for programs (the OAuth2 password flow) or a session
cookie for the web pages. Both go through the same checks and the same throttling."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from ivr.api.auth import (
    SESSION_COOKIE,
    LoginThrottle,
    authenticate,
    client_address,
    issue_token,
    require_request_header,
)
from ivr.models import User

router = APIRouter(prefix="/api/auth", tags=["auth"])

LoginForm = Annotated[OAuth2PasswordRequestForm, Depends()]


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"


class SessionOut(BaseModel):
    username: str
    role: str


async def log_in(request: Request, form: OAuth2PasswordRequestForm) -> User:
    """The user whose name and password these are; 429 while the name or the address is
    locked by failed log-ins (before the password is checked), 401 if they do not match."""
    state = request.app.state
    throttle = LoginThrottle(state.redis)
    address = client_address(request)
    wait = await throttle.seconds_to_wait(form.username, address)
    if wait:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"too many failed log-ins: try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    user = await authenticate(state.sessions, form.username, form.password)
    if user is None:
        await throttle.failed(form.username, address)
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="wrong user name or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    await throttle.succeeded(form.username)
    return user


@router.post("/token", response_model=Token, summary="Log in: user name and password for a token")
async def token(request: Request, form: LoginForm) -> Token:
    user = await log_in(request, form)
    settings = request.app.state.settings
    return Token(access_token=issue_token(user, settings.jwt_secret(), settings.token_minutes))


@router.post("/session", response_model=SessionOut,
             summary="Log in the web pages: user name and password for the session cookie")
async def open_session(request: Request, response: Response, form: LoginForm) -> SessionOut:
    user = await log_in(request, form)
    settings = request.app.state.settings
    response.set_cookie(
        SESSION_COOKIE,
        issue_token(user, settings.jwt_secret(), settings.token_minutes),
        max_age=settings.token_minutes * 60,
        path="/",
        httponly=True,  # the pages' scripts never see the token
        samesite="strict",
        secure=request.url.scheme == "https",  # plain HTTP on one machine must work too
    )
    return SessionOut(username=user.username, role=user.role)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT,
             dependencies=[Depends(require_request_header)],
             summary="Log the web pages out: clears the session cookie")
async def logout(response: Response) -> None:
    # No valid session needed: an expired cookie must be clearable too.
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")

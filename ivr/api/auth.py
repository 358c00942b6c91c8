"""Users, passwords and tokens: who may call which route.

Passwords are stored as bcrypt hashes. A log-in returns a signed token (JWT) naming the user and
their role; every route declares the roles it accepts with :func:`require_roles`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import bcrypt
import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ivr.models import Role, User

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), password_hash.encode())
    except ValueError:
        return False


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a route."""

    username: str
    role: Role


def issue_token(user: User, key: str, minutes: int) -> str:
    expires = datetime.now(UTC) + timedelta(minutes=minutes)
    return jwt.encode({"sub": user.username, "role": user.role, "exp": expires}, key, ALGORITHM)


def read_token(token: str, key: str) -> Principal:
    claims = jwt.decode(token, key, algorithms=[ALGORITHM])
    return Principal(username=str(claims["sub"]), role=Role(claims["role"]))


async def authenticate(sessions: async_sessionmaker[AsyncSession], username: str,
                       password: str) -> User | None:
    async with sessions() as session:
        user = await session.scalar(select(User).where(User.username == username))
    if user is None or not verify_password(password, user.password_hash):
        return None
    return user


async def ensure_first_admin(sessions: async_sessionmaker[AsyncSession],
                             password: str | None) -> None:
    """Create the user ``admin`` when there is no user yet; print a generated password once."""
    async with sessions() as session:
        if await session.scalar(select(func.count()).select_from(User)):
            return
        generated = password is None
        password = password or secrets.token_urlsafe(12)
        session.add(User(username="admin", password_hash=hash_password(password),
                         role=Role.ADMIN))
        try:
            await session.commit()
        except IntegrityError:
            return  # another API process created it at the same moment
    if generated:
        # Shown once, at first start; set IVR_ADMIN_PASSWORD to choose it instead.
        log.warning("first admin created: user 'admin', password %s (shown only this once)",
                    password)
    else:
        log.info("first admin created: user 'admin' with the password of IVR_ADMIN_PASSWORD")


async def current_principal(request: Request,
                            token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
    unauthorized = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="not authenticated: log in at POST /api/auth/token and send the bearer token",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if not token:
        raise unauthorized
    try:
        return read_token(token, request.app.state.settings.jwt_secret())
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise unauthorized from exc


def require_roles(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through only the given roles (403 for the others)."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"this needs one of the roles: {', '.join(roles)}",
            )
        return principal

    return check

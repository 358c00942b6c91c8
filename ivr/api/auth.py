"""Users, passwords and tokens: who may call which route.

Passwords are stored as bcrypt hashes. A log-in returns a signed token (JWT) naming the user and
their role, as a bearer token for programs or in the ``ivr_session`` cookie for the web pages;
every route declares the roles it accepts with :func:`require_roles`. Each request looks the
user up again, so a user who was deactivated, deleted or given another role is treated so at
once, not when their token expires. Repeated failed log-ins are slowed down
(:class:`LoginThrottle`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated

import bcrypt
import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ivr.models import Role, User

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)

SESSION_COOKIE = "ivr_session"
# Sent by the web pages with every change; a cross-site form cannot set a header.
REQUEST_HEADER = "X-IVR-Request"
CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), password_hash.encode())
    except ValueError:
        return False


@cache
def _unknown_user_hash() -> str:
    """Checked when the user name is unknown, so that a wrong name takes as long to refuse as
    a wrong password and does not tell which names exist."""
    return hash_password(secrets.token_urlsafe(16))


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
    """The user, if the password is theirs and they are active."""
    async with sessions() as session:
        user = await session.scalar(select(User).where(User.username == username))
    # bcrypt takes a quarter of a second: in a thread, so other requests go on meanwhile.
    password_hash = _unknown_user_hash() if user is None else user.password_hash
    matches = await asyncio.to_thread(verify_password, password, password_hash)
    if user is None or not matches or not user.active:
        return None
    return user


class LoginThrottle:
    """Slows down guessing: failed log-ins are counted per user name and per client address.

    Once a name (or an address) has too many failures within the window, each further failure
    locks it for a time that doubles (1 s, 2 s, 4 s... up to 15 minutes); while locked, a
    log-in is refused with 429 before its password is checked. Counters live in Redis under
    ``ivr:login:`` so every API process shares them. Without Redis there is no throttling:
    agents must still be able to log in.
    """

    WINDOW_SECONDS = 15 * 60
    MAX_LOCK_SECONDS = 15 * 60
    FAILURES_PER_USER = 5
    # A whole call-center floor often reaches the server from one address (NAT, proxy): a few
    # typing mistakes there must not lock every agent out.
    FAILURES_PER_ADDRESS = 20

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def user_key(username: str) -> str:
        return f"ivr:login:user:{username[:64]}"  # no stored name is longer

    @staticmethod
    def address_key(address: str) -> str:
        return f"ivr:login:address:{address}"

    async def seconds_to_wait(self, username: str, address: str) -> int:
        """How long this log-in must wait (0: it may try now)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(self.user_key(username), "locked_until")
                pipe.hget(self.address_key(address), "locked_until")
                locks = await pipe.execute()
        except RedisError as exc:
            log.warning("log-in throttling is off, Redis is not answering: %s", exc)
            return 0
        now = time.time()
        remaining = max((float(until) - now for until in locks if until), default=0.0)
        return max(0, math.ceil(remaining))

    async def failed(self, username: str, address: str) -> None:
        try:
            await self._count_failure(self.user_key(username), self.FAILURES_PER_USER)
            await self._count_failure(self.address_key(address), self.FAILURES_PER_ADDRESS)
        except RedisError as exc:
            log.warning("failed log-in not counted, Redis is not answering: %s", exc)

    async def succeeded(self, username: str) -> None:
        # Only the name's counter: others at the same address may still be guessing.
        try:
            await self.redis.delete(self.user_key(username))
        except RedisError as exc:
            log.warning("log-in counter not cleared, Redis is not answering: %s", exc)

    async def _count_failure(self, key: str, allowed: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "failures", 1)
            pipe.expire(key, self.WINDOW_SECONDS, nx=True)  # the window opens at the first
            failures, _ = await pipe.execute()
        if failures < allowed:
            return
        lock = min(2 ** min(failures - allowed, 20), self.MAX_LOCK_SECONDS)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "locked_until", str(time.time() + lock))
            # Past the limit, every failure keeps the count for another window: waiting out
            # one window must not give a guesser five fresh tries.
            pipe.expire(key, self.WINDOW_SECONDS)
            await pipe.execute()
        log.warning("too many failed log-ins for %s (%d): locked for %d s", key, failures, lock)


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


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def require_request_header(request: Request) -> None:
    """The guard against cross-site requests riding on the session cookie (403 without it)."""
    if request.headers.get(REQUEST_HEADER) != "1":
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"a change made with the session cookie needs the header {REQUEST_HEADER}: 1",
        )


async def current_principal(request: Request,
                            token: Annotated[str | None, Depends(oauth2_scheme)]) -> Principal:
    """The signed-in user: from the bearer token or, without one, the session cookie."""
    unauthorized = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="not authenticated: send a bearer token (POST /api/auth/token) or the session "
               "cookie (POST /api/auth/session)",
        headers={"WWW-Authenticate": "Bearer"},
    )
    from_cookie = not token
    token = token or request.cookies.get(SESSION_COOKIE)
    if not token:
        raise unauthorized
    try:
        claimed = read_token(token, request.app.state.settings.jwt_secret())
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise unauthorized from exc
    async with request.app.state.sessions() as session:
        user = await session.scalar(select(User).where(User.username == claimed.username))
    if user is None or not user.active:
        raise unauthorized
    if from_cookie and request.method in CHANGING_METHODS:
        require_request_header(request)
    # The role of now, not the one written in the token when it was issued.
    return Principal(username=user.username, role=Role(user.role))


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

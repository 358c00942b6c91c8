"""The API's users: admins, supervisors and agents, and who may manage them.

Admins create, change and delete users; supervisors may see the list; everyone sees themself at
``GET /api/users/me``. There is always an active admin left: the last one cannot be deleted,
demoted or deactivated, and nobody deletes, demotes or deactivates themself. Every change goes
to the audit log (never a password).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ivr.api.audit import record_change
from ivr.api.auth import Principal, hash_password, require_roles
from ivr.models import Role, User, aware

router = APIRouter(prefix="/api/users", tags=["users"])

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
AdminOrSupervisor = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SUPERVISOR))]
AnyRole = Annotated[Principal, Depends(require_roles(Role.AGENT, Role.SUPERVISOR, Role.ADMIN))]

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$"
PASSWORD_MIN = 10
PASSWORD_MAX_BYTES = 72  # bcrypt reads no further


def _password_fits(password: str) -> str:
    if len(password.encode()) > PASSWORD_MAX_BYTES:
        raise ValueError(f"a password has at most {PASSWORD_MAX_BYTES} bytes")
    return password


Password = Annotated[str, Field(min_length=PASSWORD_MIN), AfterValidator(_password_fits)]


class UserOut(BaseModel):
    username: str
    display_name: str
    role: Role
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(username=user.username, display_name=user.display_name,
                   role=Role(user.role), active=user.active, created_at=aware(user.created_at))


class NewUser(BaseModel):
    username: str = Field(pattern=USERNAME_PATTERN, examples=["kim.agent"])
    password: Password
    role: Role
    display_name: str = Field(default="", max_length=128)


class UserChange(BaseModel):
    role: Role | None = None
    password: Password | None = None
    active: bool | None = None
    display_name: str | None = Field(default=None, max_length=128)


async def _find(session: AsyncSession, username: str) -> User:
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no user {username}")
    return user


async def _keep_an_admin(session: AsyncSession, user: User, principal: Principal,
                        what: str) -> None:
    """409 if removing ``user`` (an admin) would leave no active admin, or if they are the
    caller. The admins' rows are locked (PostgreSQL), so two admins removing each other at the
    same moment cannot both succeed."""
    admins = (await session.scalars(
        select(User.username).where(User.role == Role.ADMIN, User.active.is_(True))
        .with_for_update())).all()
    if list(admins) == [user.username]:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT,
                            detail=f"{user.username} is the last admin: they cannot be {what}")
    if user.username == principal.username:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT,
                            detail=f"an admin cannot be {what} by themself")


@router.get("", response_model=list[UserOut], summary="All users")
async def list_users(request: Request, _: AdminOrSupervisor) -> list[UserOut]:
    async with request.app.state.sessions() as session:
        users = await session.scalars(select(User).order_by(User.username))
        return [UserOut.of(user) for user in users]


@router.get("/me", response_model=UserOut, summary="The signed-in user")
async def me(request: Request, principal: AnyRole) -> UserOut:
    async with request.app.state.sessions() as session:
        return UserOut.of(await _find(session, principal.username))


@router.post("", response_model=UserOut, status_code=status.HTTP_201_CREATED,
             summary="Create a user")
async def create_user(request: Request, new: NewUser, principal: Admin) -> UserOut:
    # bcrypt takes a quarter of a second: in a thread, so other requests go on meanwhile.
    password_hash = await asyncio.to_thread(hash_password, new.password)
    user = User(username=new.username, password_hash=password_hash, role=new.role,
                display_name=new.display_name, active=True)
    try:
        async with request.app.state.sessions() as session, session.begin():
            session.add(user)
    except IntegrityError as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT,
                            detail=f"the user {new.username} exists already") from exc
    await record_change(request, principal, "user.create", user.username,
                        {"role": user.role, "display_name": user.display_name})
    return UserOut.of(user)


@router.patch("/{username}", response_model=UserOut,
              summary="Change a user's role, password, active flag or display name")
async def change_user(request: Request, username: str, change: UserChange,
                      principal: Admin) -> UserOut:
    detail: dict[str, Any] = {}
    new_hash = None if change.password is None else await asyncio.to_thread(hash_password,
                                                                            change.password)
    async with request.app.state.sessions() as session, session.begin():
        user = await _find(session, username)
        demoted = change.role is not None and change.role != user.role
        deactivated = change.active is False and user.active
        if user.role == Role.ADMIN and (demoted or deactivated):
            await _keep_an_admin(session, user, principal,
                                 "demoted" if demoted else "deactivated")
        if change.role is not None and change.role != user.role:
            detail["role"] = {"from": user.role, "to": change.role}
            user.role = change.role
        if change.active is not None and change.active != user.active:
            detail["active"] = change.active
            user.active = change.active
        if change.display_name is not None and change.display_name != user.display_name:
            detail["display_name"] = change.display_name
            user.display_name = change.display_name
        if new_hash is not None:
            user.password_hash = new_hash
            detail["password"] = "changed"  # that it changed, never what to
    if detail:
        await record_change(request, principal, "user.update", username, detail)
    return UserOut.of(user)


@router.delete("/{username}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a user")
async def delete_user(request: Request, username: str, principal: Admin) -> None:
    async with request.app.state.sessions() as session, session.begin():
        user = await _find(session, username)
        if user.role == Role.ADMIN:
            await _keep_an_admin(session, user, principal, "deleted")
        role = user.role
        await session.delete(user)
    await record_change(request, principal, "user.delete", username, {"role": role})

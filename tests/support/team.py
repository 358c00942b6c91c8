"""The agents of one test: accounts made with `ivr agent add`, baresip softphones registered
to them, removed afterwards."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ivr.acd.core import Acd
from ivr.redis_client import connect_redis
from tests.conftest import Server, caller_number, run_ivr, wait_for
from tests.support.softphone import Softphone


@dataclass
class Team:
    """The agents of one test: made with `ivr agent add`, removed afterwards."""

    server: Server
    acd: Acd
    phones: list[Softphone] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    async def agent(self, name: str, skills: str, languages: str = "ko", answer: bool = True,
                    softphone: bool = True, log_in: bool = True) -> str:
        username = f"t-{name}-{caller_number()[-4:]}"
        made = run_ivr("agent", "add", username, "--skills", skills, "--languages", languages,
                       server=self.server)
        assert made.returncode == 0, made.stdout + made.stderr
        self.names.append(username)
        password = re.search(r"shown once\): (\S+)", made.stdout)
        assert password, made.stdout
        if softphone:
            phone = Softphone(self.server.workdir, username, password.group(1),
                              self.server.sip_target, answer).start()
            self.phones.append(phone)
            await phone.registered()

            async def seen() -> bool:
                return (await self.acd.agent(username)).get("registered") == "1"

            await wait_for(seen, 15, what=f"{username}'s registration at the controller")
        if log_in:
            state = run_ivr("agent", "state", username, "available", server=self.server)
            assert state.returncode == 0, state.stdout
        return username

    async def state(self, username: str) -> dict[str, str]:
        return await self.acd.agent(username)


@contextlib.asynccontextmanager
async def team_of(server: Server) -> AsyncIterator[Team]:
    """A team for one test on this stack: its phones stopped and accounts removed after."""
    redis = connect_redis(server.settings)
    team = Team(server, Acd(redis))
    try:
        yield team
    finally:
        for phone in team.phones:
            phone.stop()
        for username in team.names:
            run_ivr("agent", "remove", username, server=server)
        await redis.aclose()

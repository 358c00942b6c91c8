"""The ARI client against the real Asterisk: clear errors for what fails."""

from __future__ import annotations

import pytest

from ivr.ari import AriClient, AriError, ChannelGone
from tests.conftest import Server, wait_for


async def test_info_and_clear_errors(server: Server) -> None:
    settings = server.settings
    async with AriClient(settings.ari_base_url, settings.ari_user, settings.ari_secret()) as ari:
        info = await ari.asterisk_info()
        assert info["system"]["version"].startswith("22.")
        with pytest.raises(AriError) as missing:
            await ari.answer("no-such-channel")
        assert missing.value.not_found
        assert "POST /channels/no-such-channel/answer" in str(missing.value)

    async with AriClient(settings.ari_base_url, settings.ari_user, "wrong-password") as ari:
        with pytest.raises(AriError) as refused:
            await ari.ping()
        assert refused.value.status == 401

    async with AriClient("http://127.0.0.1:9", "ivr", "x", timeout=1) as ari:
        with pytest.raises(AriError) as unreachable:
            await ari.ping()
        assert unreachable.value.status == 0 and "unreachable" in str(unreachable.value)


async def test_a_bridge_for_a_channel_that_hung_up_is_not_left_behind(server: Server) -> None:
    """A caller who hangs up as the agent answers: bridging fails with ChannelGone (which the
    calls wait out for the hang-up's event) and leaves no empty bridge."""
    settings = server.settings
    async with AriClient(settings.ari_base_url, settings.ari_user, settings.ari_secret()) as ari:
        with pytest.raises(ChannelGone) as gone:
            await ari.bridge_channels("test:gone", ["no-such-caller", "no-such-agent"])
        assert "addChannel" in str(gone.value)
        # By its name: other calls' bridges come and go meanwhile, the callbot's at a front
        # door among them. And waited for: Asterisk lists bridges from a cache that its own
        # task queue updates after the DELETE has returned, late on a busy machine.

        async def removed() -> bool:
            return not [bridge for bridge in await ari.request("GET", "/bridges")
                        if bridge.get("name") == "test:gone"]

        await wait_for(removed, timeout=10, what="the empty bridge to be removed")

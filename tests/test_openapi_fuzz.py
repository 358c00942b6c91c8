"""The OpenAPI schema is complete and the API never fails with a server error: schemathesis
sends generated requests to every operation of a stack of this module's own (its requests
create and delete things at random, so the session's stack is left alone)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, another_stack

SHIFT = 500


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> Iterator[Server]:
    with another_stack(tmp_path_factory.mktemp("fuzz"), SHIFT, {},
                       lambda: bool(request.session.testsfailed)) as server:
        yield server


def test_no_operation_fails_with_a_server_error(fuzz_stack: Server, tmp_path: Path) -> None:
    base = fuzz_stack.settings.api_base_url
    token = httpx.post(f"{base}/api/auth/token", data={
        "username": "admin", "password": fuzz_stack.admin_password}).json()["access_token"]
    schemathesis = Path(sys.executable).with_name("st")
    run = subprocess.run(
        [str(schemathesis), "run", f"{base}/openapi.json", "--checks", "not_a_server_error",
         "-H", f"Authorization: Bearer {token}", "--max-examples", "8",
         "--request-timeout", "30", "--exclude-path", "/api/auth/logout",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)  # its cache goes there
    summary = run.stdout[-4000:]
    print(f"\n{summary}")
    assert run.returncode == 0, summary + run.stderr[-2000:]

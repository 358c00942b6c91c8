"""Registering the benchmark's agents: a REGISTER with digest authentication for each, with the
agents' SIPp as the contact. (SIPp cannot take a different password per agent in one run.)"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass, field

CHALLENGE = re.compile(r'(\w+)="?([^",]*)"?')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # SIP digest is MD5 (RFC 2617)


def digest(user: str, password: str, method: str, uri: str, challenge: dict[str, str],
           cnonce: str) -> str:
    """The Authorization header's value for a WWW-Authenticate challenge."""
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = _md5(f"{user}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
              "algorithm=MD5"]
    if "auth" in challenge.get("qop", "").split(","):
        response = _md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        fields += ["qop=auth", "nc=00000001", f'cnonce="{cnonce}"']
    else:
        response = _md5(f"{ha1}:{nonce}:{ha2}")
    if "opaque" in challenge:
        fields.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join([*fields, f'response="{response}"'])


@dataclass
class Registrar(asyncio.DatagramProtocol):
    """The answers to our REGISTERs, by Call-ID."""

    answers: dict[str, asyncio.Queue[str]] = field(default_factory=dict)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode(errors="replace")
        match = re.search(r"^Call-ID:\s*(\S+)", text, re.MULTILINE | re.IGNORECASE)
        if match and match.group(1) in self.answers:
            self.answers[match.group(1)].put_nowait(text)


def _register(user: str, host: str, port: int, local_port: int, contact_port: int,
              call_id: str, cseq: int, authorization: str = "") -> bytes:
    uri = f"sip:{host}:{port}"
    lines = [
        f"REGISTER {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};rport;branch=z9hG4bK{secrets.token_hex(8)}",
        f"From: <sip:{user}@{host}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{user}@{host}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:{contact_port}>",
        "Expires: 3600",
        "Max-Forwards: 70",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


async def register_agents(target: str, passwords: dict[str, str], contact_port: int,
                          at_once: int = 50) -> list[str]:
    """Register every agent (user -> SIP password); returns the users that failed."""
    host, _, port_text = target.partition(":")
    port = int(port_text or 5060)
    loop = asyncio.get_running_loop()
    registrar = Registrar()
    transport, _ = await loop.create_datagram_endpoint(lambda: registrar,
                                                       local_addr=("127.0.0.1", 0))
    local_port = transport.get_extra_info("sockname")[1]
    limit = asyncio.Semaphore(at_once)

    async def exchange(user: str, call_id: str, cseq: int, authorization: str = "") -> str:
        message = _register(user, host, port, local_port, contact_port, call_id, cseq,
                            authorization)
        for _ in range(4):  # UDP: send again when no answer comes
            transport.sendto(message, (host, port))
            try:
                while True:
                    answer = await asyncio.wait_for(registrar.answers[call_id].get(), 2)
                    if not answer.startswith("SIP/2.0 1"):  # not a provisional answer
                        return answer
            except TimeoutError:
                continue
        return ""

    async def one(user: str, password: str) -> bool:
        async with limit:
            call_id = f"{secrets.token_hex(8)}@bench"
            registrar.answers[call_id] = asyncio.Queue()
            try:
                answer = await exchange(user, call_id, 1)
                if answer.startswith("SIP/2.0 200"):
                    return True
                header = re.search(r"^WWW-Authenticate:\s*Digest\s+(.*)$", answer,
                                   re.MULTILINE | re.IGNORECASE)
                if not header:
                    return False
                challenge = dict(CHALLENGE.findall(header.group(1)))
                authorization = digest(user, password, "REGISTER", f"sip:{host}:{port}",
                                       challenge, secrets.token_hex(8))
                answer = await exchange(user, call_id, 2, authorization)
                return answer.startswith("SIP/2.0 200")
            finally:
                del registrar.answers[call_id]

    try:
        done = await asyncio.gather(*(one(user, pw) for user, pw in passwords.items()))
    finally:
        transport.close()
    return [user for user, ok in zip(passwords, done, strict=True) if not ok]

"""SIPp scenarios written for a test: a caller who presses keys by SIP INFO, at set moments.

(Digits by RFC 2833 are sent by the test itself, in the call's RTP: see sip.RtpSink.) Requests
within the call follow the answer's Contact and Record-Route, so that the same scenarios work
straight to Asterisk and through the cluster's edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HEAD = """<?xml version="1.0" encoding="UTF-8" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Test Caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:[caller]@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [rtp_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: "Test Caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:[caller]@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
"""

INFO = """  <pause milliseconds="{pause}"/>
  <send><![CDATA[
INFO [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: "Test Caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} INFO
Contact: sip:[caller]@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/dtmf-relay
Content-Length: [len]

Signal={digit}
Duration=160
]]></send>
  <recv response="200"/>
"""

SERVER_HANGS_UP = """  <recv request="BYE" timeout="{timeout}"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
</scenario>
"""

CALLER_HANGS_UP = """  <pause {pause}/>
  <send><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: "Test Caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} BYE
Contact: sip:[caller]@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""


@dataclass(frozen=True)
class Press:
    """Press ``digit`` by SIP INFO, ``after`` seconds after the previous step."""

    digit: str
    after: float


def info_caller(workdir: Path, name: str, presses: list[Press], hang_up_after: float | None = None,
                wait_for_bye: float = 120, patience: tuple[float, float] | None = None) -> str:
    """Write a scenario: answered, presses keys by SIP INFO, then the server (or the caller,
    ``hang_up_after`` seconds after the last key, or a random time within ``patience``) hangs
    up. Returns the file's path."""
    parts = [HEAD.format(name=name)]
    cseq = 2
    for press in presses:
        parts.append(INFO.format(pause=int(press.after * 1000), cseq=cseq, digit=press.digit))
        cseq += 1
    if patience is not None:
        low, high = (int(seconds * 1000) for seconds in patience)
        pause = f'distribution="uniform" min="{low}" max="{high}"'
        parts.append(CALLER_HANGS_UP.format(pause=pause, cseq=cseq))
    elif hang_up_after is None:
        parts.append(SERVER_HANGS_UP.format(timeout=int(wait_for_bye * 1000)))
    else:
        pause = f'milliseconds="{int(hang_up_after * 1000)}"'
        parts.append(CALLER_HANGS_UP.format(pause=pause, cseq=cseq))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.xml"
    path.write_text("".join(parts))
    return str(path)

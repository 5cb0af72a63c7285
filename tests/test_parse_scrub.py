"""`parse_response` skips the walk through the body only when the secret cannot be in it."""

from __future__ import annotations

import httpx

from runcycles._protocol.requests import parse_response
from runcycles._text import REDACTED, Scrubber

SECRET = "cyc_live_0123456789abcdef"


def test_plain_body_without_the_secret_is_kept_as_decoded() -> None:
    response = parse_response(200, httpx.Headers(), b'{"a":"b","c":[1,{"d":"e"}]}', scrub=Scrubber(SECRET))
    assert response.body == {"a": "b", "c": [1, {"d": "e"}]}


def test_secret_in_plain_bytes_is_redacted_everywhere() -> None:
    content = ('{"message":"bad key ' + SECRET + '","' + SECRET + '":[{"x":"' + SECRET + '"}]}').encode()
    response = parse_response(401, httpx.Headers(), content, scrub=Scrubber(SECRET))
    assert SECRET not in repr(response.body)
    assert response.body["message"] == f"bad key {REDACTED}"
    assert SECRET.encode() not in response.content


def test_secret_hidden_behind_json_escapes_is_still_redacted() -> None:
    escaped = "".join(f"\\u{ord(ch):04x}" for ch in SECRET)  # no byte run of the secret in the raw content
    content = ('{"message":"key ' + escaped + '","nested":{"v":["' + escaped + '"]}}').encode()
    assert SECRET.encode() not in content
    response = parse_response(400, httpx.Headers(), content, scrub=Scrubber(SECRET))
    assert response.body == {"message": f"key {REDACTED}", "nested": {"v": [REDACTED]}}
    assert response.error_message == f"key {REDACTED}"

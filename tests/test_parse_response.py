"""`parse_response`'s body and error message for every kind of answer, as a table."""

from __future__ import annotations

import httpx
import pytest

from runcycles._protocol.requests import parse_response

_CUT = "response body larger than 64 bytes (not read past the limit)"
_ERR = b'{"error":"BUDGET_EXCEEDED","message":"no budget left"}'
_ERR_BODY = {"error": "BUDGET_EXCEEDED", "message": "no budget left"}

# case: (status, content, reason, cut_at, expected body, expected error message)
_CASES = {
    "2xx json": (200, b'{"a":1}', "OK", None, {"a": 1}, None),
    "2xx edge 299": (299, b'{"message":"m"}', "", None, {"message": "m"}, None),
    "2xx empty": (204, b"", "No Content", None, None, None),
    "2xx not json": (200, b"<html>", "OK", None, None, None),
    "2xx cut": (200, b'{"a":1}', "OK", 64, None, _CUT),
    "error message": (409, _ERR, "Conflict", None, _ERR_BODY, "no budget left"),
    "error code when message empty": (400, b'{"error":"E","message":""}', "", None, {"error": "E", "message": ""}, "E"),
    "error code when message is 7": (400, b'{"error":"E","message":7}', "", None, {"error": "E", "message": 7}, "E"),
    "reason when neither": (404, b'{"error":"","message":null}', "Gone", None, {"error": "", "message": None}, "Gone"),
    "reason when body is a list": (404, b'["message"]', "Not Found", None, ["message"], "Not Found"),
    "reason when not json": (502, b"<html>", "Bad Gateway", None, None, "Bad Gateway"),
    "status when no reason": (503, b"", "", None, None, "HTTP 503"),
    "3xx is an error": (302, b'{"message":"moved"}', "Found", None, {"message": "moved"}, "moved"),
    "1xx is an error": (199, b"", "", None, None, "HTTP 199"),
    "error cut": (500, _ERR, "Internal Server Error", 64, None, f"Internal Server Error; {_CUT}"),
    "error cut without reason": (500, _ERR, "", 64, None, f"HTTP 500; {_CUT}"),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_body_and_error_message(case: str) -> None:
    status, content, reason, cut_at, body, message = _CASES[case]
    response = parse_response(status, httpx.Headers(), content, reason, cut_at=cut_at)
    assert response.body == body
    assert response.error_message == message
    assert response.body_truncated is (cut_at is not None) and response.content == content

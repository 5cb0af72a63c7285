"""Bounding and redacting what a server sent before it reaches a log line, an exception or a caller.

A server's error text can be huge (a 50 MB ``message``) or echo the request back, API key included. Every
response the wire clients read goes through a `Scrubber` built from the configured key: free text (error
messages, transport errors) is redacted and then capped at `MAX_TEXT_CHARS`; structured data (the decoded
body, headers, raw bytes) is redacted only, and only for keys of at least `MIN_SECRET_CHARS` characters
(a shorter key would match ordinary words and corrupt the data).
"""

from __future__ import annotations

import zlib
from typing import Any

import httpx

__all__ = ["MAX_TEXT_CHARS", "MIN_SECRET_CHARS", "REDACTED", "BodyReader", "Scrubber", "cap"]

MAX_TEXT_CHARS = 2048
"""Server text longer than this is cut (and marked as cut) in log lines and exception messages."""

MIN_SECRET_CHARS = 8
REDACTED = "[REDACTED]"


def cap(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` itself when short enough, else its first ``limit`` characters marked as cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [cut: {len(text) - limit} more characters]"


class Scrubber:
    """Redacts one secret (the configured API key) from text and JSON values; caps free text."""

    __slots__ = ("_bytes", "_secret", "_structured")

    def __init__(self, secret: str | None) -> None:
        self._secret = secret or None
        self._structured = self._secret is not None and len(self._secret) >= MIN_SECRET_CHARS
        self._bytes = self._secret.encode("utf-8") if self._secret is not None else b""

    def __repr__(self) -> str:
        return "Scrubber(<secret>)"

    def text(self, value: str) -> str:
        """Free text: the secret redacted (whatever its length), then capped."""
        if self._secret is not None and self._secret in value:
            value = value.replace(self._secret, REDACTED)
        return cap(value)

    def content(self, raw: bytes) -> bytes:
        """Raw response bytes with the secret redacted."""
        if self._structured and self._bytes in raw:
            return raw.replace(self._bytes, REDACTED.encode())
        return raw

    def headers(self, headers: httpx.Headers) -> httpx.Headers:
        """Response headers with the secret redacted from every value (the same object when it is absent)."""
        secret = self._secret
        if not self._structured or secret is None:
            return headers
        items = headers.multi_items()
        if not any(secret in value for _, value in items):
            return headers
        return httpx.Headers([(name, value.replace(secret, REDACTED)) for name, value in items])

    def data(self, value: Any) -> Any:
        """A decoded JSON value with the secret redacted from every string and key (lists and dicts in place)."""
        secret = self._secret
        if not self._structured or secret is None:
            return value
        if isinstance(value, str):
            return value.replace(secret, REDACTED) if secret in value else value
        stack: list[Any] = [value]
        while stack:  # iterative: a deeply nested body must not hit the recursion limit
            node = stack.pop()
            if isinstance(node, dict):
                stack.extend(_redact_dict(node, secret))
            elif isinstance(node, list):
                stack.extend(_redact_list(node, secret))
        return value


def _redact_dict(node: dict[Any, Any], secret: str) -> list[Any]:
    """Redact ``secret`` from the dict's string values and keys in place; returns the nested dicts and lists."""
    nested: list[Any] = []
    for key in list(node):
        item = node[key]
        if isinstance(item, str) and secret in item:
            node[key] = item.replace(secret, REDACTED)
        elif isinstance(item, (dict, list)):
            nested.append(item)
        if isinstance(key, str) and secret in key:
            node[key.replace(secret, REDACTED)] = node.pop(key)
    return nested


def _redact_list(node: list[Any], secret: str) -> list[Any]:
    """Redact ``secret`` from the list's string items in place; returns the nested dicts and lists."""
    nested: list[Any] = []
    for i, item in enumerate(node):
        if isinstance(item, str) and secret in item:
            node[i] = item.replace(secret, REDACTED)
        elif isinstance(item, (dict, list)):
            nested.append(item)
    return nested


class BodyReader:
    """Accumulates a streamed response body up to ``limit`` bytes (after decoding); past it, stops.

    ``Content-Encoding`` gzip/deflate is decoded with a bounded decompressor (the client asks for
    ``identity``; a server that compresses anyway cannot inflate a bomb into memory). Another encoding
    leaves the bytes as they came (they will not read as JSON: a malformed response).
    """

    def __init__(self, limit: int, content_encoding: str | None) -> None:
        self.limit = limit
        self.cut = False
        self._parts: list[bytes] = []
        self._size = 0
        encoding = (content_encoding or "").strip().lower()
        self._inflate: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._inflate = zlib.decompressobj()

    def feed(self, chunk: bytes) -> bool:
        """Add one raw chunk; False once the body went past the limit (stop reading then)."""
        if self.cut:
            return False
        if self._inflate is not None:
            try:
                chunk = self._inflate.decompress(chunk, self.limit + 1 - self._size)
            except zlib.error:
                self._inflate = None  # not what it claims: keep the raw bytes, they will not parse
        room = self.limit - self._size
        if len(chunk) > room:
            self._parts.append(chunk[:room])
            self._size = self.limit
            self.cut = True
            return False
        self._parts.append(chunk)
        self._size += len(chunk)
        if self._inflate is not None and self._inflate.unconsumed_tail:
            self.cut = True  # the decoded body is larger than the limit
            return False
        return True

    def content(self) -> bytes:
        """The bytes read (at most ``limit``)."""
        return b"".join(self._parts)

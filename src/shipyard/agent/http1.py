"""HTTP/1.1 message parsing for the router: strict, incremental, standard library only.

One parser decides how a client's request is framed (RFC 9112 §6.3), and the request is
forwarded with exactly that framing (Content-Length dropped when Transfer-Encoding is there),
so the release cannot read the body differently from the router: no request smuggling through
the proxy. Request heads follow the RFC 9110/9112 grammar: a token method, a target without
whitespace or control characters, HTTP/1.x, token field names with no space before the colon;
a request whose framing is ambiguous (two Content-Lengths, a coding other than chunked, no
Host on HTTP/1.1) is refused with the status a client should see.

A release's response is parsed the same way (status line, fields, framing by no-body
status/HEAD, chunked, Content-Length, or end of connection, in that order).
"""

from __future__ import annotations

import re
from typing import List, Optional, Set, Tuple

__all__ = [
    "CHUNKED",
    "HOP_BY_HOP",
    "LENGTH",
    "MAX_HEAD",
    "NO_BODY",
    "UNTIL_CLOSE",
    "BadMessage",
    "ChunkedReader",
    "RequestHead",
    "ResponseHead",
    "chunk",
    "connection_tokens",
    "field_lines",
    "find_head_end",
    "request_head_bytes",
    "request_headers",
]

# Hop-by-hop fields (RFC 9110 §7.6.1) are not forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
# Largest message head accepted (request or response), and chunk-size line.
MAX_HEAD = 64 * 1024
_MAX_CHUNK_LINE = 4096

# Body framing.
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e\x80-\xff]+) HTTP/([0-9])\.([0-9])")
_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_FIELD_LINE = re.compile(
    rb"(" + _TOKEN + rb"):[ \t]*((?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*"
    rb"[\x21-\x7e\x80-\xff])?)?)[ \t]*"
)
# A chunk-size line must end in CRLF: a bare LF there is how requests are smuggled past
# proxies that disagree about it.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?\r")
_DIGITS = re.compile(rb"[0-9]{1,18}")


class BadMessage(Exception):
    """A message that breaks the grammar or whose framing is ambiguous; `status` for a client."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def find_head_end(buf: bytes, start: int = 0) -> Optional[Tuple[int, int]]:
    """(end of the head, start of the body) in `buf`, or None while the head is incomplete."""
    match = _HEAD_END.search(buf, start)
    return None if match is None else (match.start(), match.end())


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def connection_tokens(fields: List[Tuple[bytes, bytes]]) -> Set[bytes]:
    tokens: Set[bytes] = set()
    for name, value in fields:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def _split_lines(block: bytes) -> List[bytes]:
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n")  # a lone CR is left to fail the patterns
    return block.split(b"\n")


def _fields(lines: List[bytes]) -> List[Tuple[bytes, bytes, bytes]]:
    """(lowercase name, value, whole line) of each field line; obs-fold lines are unfolded."""
    out: List[Tuple[bytes, bytes, bytes]] = []
    for line in lines:
        match = _FIELD_LINE.fullmatch(line)
        if match is None:
            if line[:1] not in (b" ", b"\t") or not out:
                raise BadMessage(f"bad header line {line[:80]!r}")
            # Obsolete line folding: the value goes on, after one space.
            previous = out.pop()[2]
            line = previous.rstrip(b" \t") + b" " + line.strip(b" \t")
            match = _FIELD_LINE.fullmatch(line)
            if match is None:
                raise BadMessage(f"bad header line {line[:80]!r}")
        name, value = match.groups()
        out.append((name.lower(), value, line))
    return out


def _framing(
    lengths: Set[bytes], codings: List[bytes], status: int
) -> Tuple[int, int]:  # (framing, length)
    if codings:
        if codings != [b"chunked"]:
            raise BadMessage(
                f"unsupported transfer-encoding {b', '.join(codings).decode('latin-1')!r}",
                501 if status == 400 else status,
            )
        return CHUNKED, 0
    if lengths:
        value = lengths.pop()
        if lengths or _DIGITS.fullmatch(value) is None:
            raise BadMessage("bad content-length", status)
        return LENGTH, int(value)
    return NO_BODY, 0


def field_lines(lines: List[bytes]) -> List[Tuple[bytes, bytes]]:
    """(lowercase name, value) of field lines (trailers, say), checked like a head's."""
    return [(name, value) for name, value, _ in _fields(lines)]


class RequestHead:
    """A client's request head; `fields` are (lowercase name, value) as received."""

    __slots__ = (
        "expect_continue",
        "fields",
        "framing",
        "keep_alive",
        "length",
        "listed",
        "method",
        "target",
        "upgrade",
        "version11",
    )

    def __init__(self, block: bytes) -> None:
        lines = _split_lines(block)
        match = _REQUEST_LINE.fullmatch(lines[0])
        if match is None:
            raise BadMessage("bad request line")
        method, target, major, minor = match.groups()
        if major != b"1":
            raise BadMessage("unsupported HTTP version", 505)
        self.method = method
        self.target = target
        self.version11 = minor != b"0"
        fields: List[Tuple[bytes, bytes]] = []
        lengths: Set[bytes] = set()
        codings: List[bytes] = []
        hosts = 0
        expect = False
        for name, value, _ in _fields(lines[1:]):
            if name == b"content-length":
                lengths.update(v.strip() for v in value.split(b","))
            elif name == b"transfer-encoding":
                codings += (v.strip().lower() for v in value.split(b",") if v.strip())
            elif name == b"host":
                hosts += 1
            elif name == b"expect":
                expect = value.lower() == b"100-continue"
            fields.append((name, value))
        if self.version11 and hosts != 1:
            raise BadMessage("missing Host header" if not hosts else "more than one Host header")
        self.framing, self.length = _framing(lengths, codings, 400)
        if self.framing == LENGTH and self.length == 0:
            self.framing = NO_BODY
        self.fields = fields
        self.listed = connection_tokens(fields)
        self.keep_alive = self.version11 and b"close" not in self.listed
        self.expect_continue = self.version11 and expect and self.framing != NO_BODY
        self.upgrade = b"upgrade" in self.listed and any(n == b"upgrade" for n, _ in fields)


def request_headers(
    head: RequestHead, client_ip: str, *, upgrade: bool = False
) -> List[Tuple[bytes, bytes]]:
    """The request's fields as the release should see them.

    Hop-by-hop fields go (and those listed in Connection), except Connection/Upgrade for an
    upgrade; X-Forwarded-For gets the client's address, X-Forwarded-Proto and Host a default;
    when Transfer-Encoding is present Content-Length is dropped (RFC 9112 §6.3), so the release
    cannot frame the body differently from the router.
    """
    listed = head.listed
    out: List[Tuple[bytes, bytes]] = []
    forwarded_for: Optional[bytes] = None
    has_proto = has_host = False
    chunked = head.framing == CHUNKED
    for name, value in head.fields:
        if name in HOP_BY_HOP or name in listed:
            if upgrade and name in (b"connection", b"upgrade"):
                out.append((name, value))
            continue
        if name == b"expect":  # the router answers 100-continue itself
            continue
        if name == b"x-forwarded-for":
            forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            continue
        if name == b"content-length" and chunked:
            continue
        if name == b"x-forwarded-proto":
            has_proto = True
        elif name == b"host":
            has_host = True
        out.append((name, value))
    ip = client_ip.encode()
    out.append((b"x-forwarded-for", ip if forwarded_for is None else forwarded_for + b", " + ip))
    if not has_proto:
        out.append((b"x-forwarded-proto", b"http"))
    if not has_host:
        out.append((b"host", b"localhost"))  # HTTP/1.1 requires Host (an HTTP/1.0 client may not)
    return out


def request_head_bytes(head: RequestHead, fields: List[Tuple[bytes, bytes]]) -> bytes:
    parts = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
    for name, value in fields:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class ResponseHead:
    """A release's response head; `framing` says how its body ends.

    `lines` are the field lines to forward, `(lowercase name, line)`: hop-by-hop fields and
    those the release listed in Connection are left out.
    """

    __slots__ = ("framing", "keep_alive", "length", "lines", "reason", "status")

    def __init__(self, block: bytes, method: bytes) -> None:
        lines = _split_lines(block)
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise BadMessage("bad status line", 502)
        major, minor, status, reason = match.groups()
        self.status = int(status)
        self.reason = reason or b""
        kept: List[Tuple[bytes, bytes]] = []
        lengths: Set[bytes] = set()
        codings: List[bytes] = []
        tokens: Set[bytes] = set()
        try:
            fields = _fields(lines[1:])
        except BadMessage as exc:
            raise BadMessage(str(exc), 502) from None
        for name, value, line in fields:
            if name == b"content-length":
                lengths.update(v.strip() for v in value.split(b","))
            elif name == b"transfer-encoding":
                codings += (v.strip().lower() for v in value.split(b",") if v.strip())
            elif name == b"connection":
                tokens.update(v.strip().lower() for v in value.split(b","))
                continue
            elif name in HOP_BY_HOP:
                continue
            kept.append((name, line))
        delimited = bool(lengths or codings)
        self.framing, self.length = _framing(lengths, codings, 502)
        if not delimited:
            self.framing = UNTIL_CLOSE
        no_body = method == b"HEAD" or self.status in (204, 304) or self.status < 200
        if no_body or (self.framing == LENGTH and self.length == 0):
            self.framing = NO_BODY
        self.keep_alive = major == b"1" and minor != b"0" and b"close" not in tokens
        self.keep_alive = self.keep_alive and self.framing != UNTIL_CLOSE
        if tokens:  # fields the release listed in Connection are hop-by-hop too
            kept = [h for h in kept if h[0] not in tokens]
        self.lines = kept


class ChunkedReader:
    """An incremental decoder of a chunked body: `feed` bytes, get the data pieces back.

    `done` once the last chunk and the trailer section went by; `trailers` are the trailer
    lines (kept for a request, whose release may want them); `rest` what came after the body.
    """

    __slots__ = ("_buf", "_left", "_state", "done", "rest", "trailers")

    _SIZE, _DATA, _CRLF, _TRAILER = 0, 1, 2, 3

    def __init__(self) -> None:
        self._buf = b""
        self._state = self._SIZE
        self._left = 0
        self.done = False
        self.trailers: List[bytes] = []
        self.rest = b""

    def feed(self, data: bytes) -> List[bytes]:
        buf = self._buf + data if self._buf else data
        pos = 0
        out: List[bytes] = []
        end = len(buf)
        while pos < end and not self.done:
            state = self._state
            if state == self._DATA:
                take = min(self._left, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = self._CRLF
            elif state == self._CRLF:
                if end - pos < 2:
                    if buf[pos:end] != b"\r":
                        raise BadMessage("invalid chunked body")
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise BadMessage("invalid chunked body")
                pos += 2
                self._state = self._SIZE
            else:
                eol = buf.find(b"\n", pos)
                if eol < 0:
                    limit = _MAX_CHUNK_LINE if state == self._SIZE else MAX_HEAD
                    if end - pos > limit:
                        raise BadMessage("invalid chunked body")
                    break
                line = buf[pos:eol]
                pos = eol + 1
                if state == self._SIZE:
                    size = _CHUNK_SIZE.fullmatch(line)
                    if size is None:
                        raise BadMessage("invalid chunked body")
                    self._left = int(size.group(1), 16)
                    self._state = self._DATA if self._left else self._TRAILER
                elif line in (b"", b"\r"):
                    self.done = True
                else:
                    self.trailers.append(line.rstrip(b"\r"))
        if self.done:
            self.rest = buf[pos:]
            self._buf = b""
        else:
            self._buf = buf[pos:]
        return out

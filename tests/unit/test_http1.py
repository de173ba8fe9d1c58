"""The router's HTTP/1.1 parser: how a request is framed decides what the release sees."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.agent.http1 import (
    CHUNKED,
    LENGTH,
    NO_BODY,
    UNTIL_CLOSE,
    BadMessage,
    ChunkedReader,
    RequestHead,
    ResponseHead,
    chunk,
    request_headers,
)


def _status(block: bytes) -> int:
    with pytest.raises(BadMessage) as caught:
        RequestHead(block)
    return caught.value.status


def test_requests_whose_framing_is_ambiguous_are_refused() -> None:
    host = b"\r\nHost: x"
    # Two different lengths, a signed or non-numeric length: which one would the release use?
    assert _status(b"POST / HTTP/1.1" + host + b"\r\nContent-Length: 3\r\nContent-Length: 4") == 400
    assert _status(b"POST / HTTP/1.1" + host + b"\r\nContent-Length: +3") == 400
    assert _status(b"POST / HTTP/1.1" + host + b"\r\nContent-Length: 3, 4") == 400
    # Whitespace before the colon (RFC 9112 §5.1), a coding the router cannot frame.
    assert _status(b"POST / HTTP/1.1" + host + b"\r\nContent-Length : 3") == 400
    assert _status(b"POST / HTTP/1.1" + host + b"\r\nTransfer-Encoding: gzip, chunked") == 501
    assert _status(b"POST / HTTP/1.1" + host + b"\r\nTransfer-Encoding: chunked, chunked") == 501
    # HTTP/1.1 needs exactly one Host; a request line must be well-formed.
    assert _status(b"GET / HTTP/1.1") == 400
    assert _status(b"GET / HTTP/1.1" + host + host) == 400
    assert _status(b"GET /a b HTTP/1.1" + host) == 400
    assert _status(b"GET / HTTP/2.0" + host) == 505
    assert _status(b"GET / HTTP/1.1\r\nHost: x\rEvil: 1") == 400
    # The same length twice is one length.
    same = RequestHead(b"POST / HTTP/1.1" + host + b"\r\nContent-Length: 3\r\nContent-Length: 3")
    assert (same.framing, same.length) == (LENGTH, 3)


def test_transfer_encoding_wins_and_content_length_is_not_forwarded() -> None:
    head = RequestHead(
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: Chunked"
    )
    assert head.framing == CHUNKED
    names = [name for name, _ in request_headers(head, "10.0.0.9")]
    assert b"content-length" not in names and b"transfer-encoding" in names


def test_http10_and_connection_close_end_the_connection() -> None:
    assert not RequestHead(b"GET / HTTP/1.0").keep_alive
    assert not RequestHead(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close").keep_alive
    keep = RequestHead(b"GET / HTTP/1.1\nHost: x\nExpect: 100-continue\nContent-Length: 2")
    assert keep.keep_alive and keep.expect_continue and keep.framing == LENGTH
    assert RequestHead(b"GET / HTTP/1.1\r\nHost: x").framing == NO_BODY


def test_response_framing_follows_rfc_9112_order() -> None:
    assert ResponseHead(b"HTTP/1.1 200 OK", b"GET").framing == UNTIL_CLOSE
    assert ResponseHead(b"HTTP/1.1 200 OK\r\nContent-Length: 9", b"HEAD").framing == NO_BODY
    assert ResponseHead(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9", b"GET").framing == 0
    both = ResponseHead(
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked", b"GET"
    )
    assert both.framing == CHUNKED
    with pytest.raises(BadMessage):
        ResponseHead(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2", b"GET")


def test_a_chunk_size_line_must_end_in_crlf() -> None:
    with pytest.raises(BadMessage):
        ChunkedReader().feed(b"5\nhello\r\n0\r\n\r\n")
    with pytest.raises(BadMessage):
        ChunkedReader().feed(b"5\r\nhelloXX0\r\n\r\n")


@given(
    pieces=st.lists(st.binary(min_size=1, max_size=40), max_size=6),
    trailer=st.booleans(),
    after=st.binary(max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_chunked_bodies_decode_the_same_however_the_bytes_arrive(
    pieces: list[bytes], trailer: bool, after: bytes, cuts: list[int]
) -> None:
    wire = b"".join(chunk(p) for p in pieces) + b"0\r\n"
    wire += (b"X-T: 1\r\n" if trailer else b"") + b"\r\n" + after
    reader = ChunkedReader()
    got: list[bytes] = []
    start = 0
    for cut in [*sorted({c for c in cuts if c < len(wire)}), len(wire)]:
        if not reader.done:
            got += reader.feed(wire[start:cut])
            start = cut
    assert reader.done
    assert b"".join(got) == b"".join(pieces)
    assert reader.trailers == ([b"X-T: 1"] if trailer else [])
    assert reader.rest + wire[start:] == after

"""Docker's multiplexed stream framing, parsed incrementally, and capped output."""

import struct

from dsw.docker.logs import STDERR, STDOUT, CappedOutput, FrameParser


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def test_frames_split_anywhere_are_reassembled_per_stream() -> None:
    data = frame(STDOUT, b"hello ") + frame(STDERR, b"oops") + frame(STDOUT, b"world")
    for size in (1, 3, 7, 8, 9, len(data)):
        parser = FrameParser()
        got: dict[int, bytes] = {STDOUT: b"", STDERR: b""}
        for start in range(0, len(data), size):
            for stream, piece in parser.feed(data[start : start + size]):
                got[stream] += piece
        assert got == {STDOUT: b"hello world", STDERR: b"oops"}


def test_a_huge_frame_is_handed_on_in_pieces() -> None:
    parser = FrameParser()
    header = struct.pack(">BxxxI", STDOUT, 10_000_000)
    pieces = list(parser.feed(header + b"x" * 65536))
    assert pieces == [(STDOUT, b"x" * 65536)]


def test_capped_output_keeps_the_start_and_flags_the_rest() -> None:
    output = CappedOutput(10)
    assert output.append(b"0123456789")
    assert not output.truncated
    assert not output.append(b"abc")
    assert output.truncated
    assert output.total_bytes == 13
    assert output.text() == "0123456789"


def test_invalid_utf8_is_replaced_and_nul_kept() -> None:
    output = CappedOutput(100)
    output.append(b"a\xffb\x00c\xc3\xa9")
    assert output.text() == "a\ufffdb\x00c\u00e9"


def test_a_character_cut_by_the_cap_is_dropped() -> None:
    output = CappedOutput(4)
    output.append("abcé".encode())  # 5 bytes: the cap cuts é in half
    assert output.text() == "abc"


def test_only_what_can_be_published_is_kept() -> None:
    output = CappedOutput(100, keep_bytes=10)
    assert output.append(b"x" * 50)  # under the cap: the container may go on
    assert output.truncated
    assert output.text() == "x" * 10
    assert not output.append(b"x" * 51)  # past the cap


def test_the_tail_is_kept_and_can_be_dropped() -> None:
    output = CappedOutput(100, keep_bytes=10, reserve_bytes=5, tail_bytes=4)
    assert output.append(b"0123456789abc")
    assert bytes(output.tail) == b"9abc"
    output.drop_tail(3)
    assert (output.total_bytes, output.text(), bytes(output.tail)) == (10, "0123456789", b"9")
    assert not output.truncated
    assert output.append(b"x" * 90)  # 100: at the cap
    assert output.append(b"y" * 5)  # within the reserve: not passed yet...
    assert output.over_limit  # ...but over the cap itself
    assert not output.append(b"z")

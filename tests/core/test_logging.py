"""The access lines go out once per turn of the event loop, in whole lines, in writes a pipe
takes in one piece."""

import asyncio
import io
import math
import select

from api.core.logging import TurnLines


class Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def test_the_lines_of_one_turn_go_out_in_one_write_when_it_ends() -> None:
    stream = Writes()
    lines = TurnLines(stream)

    for number in range(3):
        lines.info(f"line {number}")
    assert stream.writes == []  # the turn is not over
    await asyncio.sleep(0)

    assert stream.writes == ["line 0\nline 1\nline 2\n"]
    lines.info("the next turn's")
    await asyncio.sleep(0)
    assert stream.writes[1:] == ["the next turn's\n"]


async def test_no_write_splits_a_line_or_is_larger_than_a_pipe_takes_in_one_piece() -> None:
    stream = Writes()
    lines = TurnLines(stream)
    sent = [f"{number:04d}" + "x" * 295 for number in range(40)]  # 300 bytes with its newline

    for line in sent:
        lines.info(line)
    await asyncio.sleep(0)

    per_write = select.PIPE_BUF // 300  # 13 on Linux
    assert len(stream.writes) == math.ceil(40 / per_write)
    assert all(len(write) <= select.PIPE_BUF and write.endswith("\n") for write in stream.writes)
    assert stream.getvalue().splitlines() == sent


async def test_a_flush_writes_the_turns_lines_at_once_and_the_turns_end_nothing_more() -> None:
    stream = Writes()
    lines = TurnLines(stream)
    lines.info("at shutdown")

    lines.flush()
    assert stream.writes == ["at shutdown\n"]
    await asyncio.sleep(0)
    assert stream.writes == ["at shutdown\n"]


def test_outside_an_event_loop_a_line_is_written_at_once() -> None:
    stream = Writes()

    TurnLines(stream).info("alone")

    assert stream.writes == ["alone\n"]


async def test_a_write_is_measured_in_bytes_not_characters() -> None:
    stream = Writes()
    lines = TurnLines(stream)
    sent = ["é" * 1500, "é" * 1500]  # 1,501 characters, 3,001 bytes each with the newline

    for line in sent:
        lines.info(line)
    await asyncio.sleep(0)

    assert [len(write.encode()) for write in stream.writes] == [3001, 3001]
    assert stream.getvalue().splitlines() == sent


class RefusesFirst(Writes):
    """A stream whose first write fails, as a closed pipe's would."""

    def write(self, text: str) -> int:
        if not self.writes:
            self.writes.append("(refused)")
            raise BrokenPipeError
        return super().write(text)


async def test_a_refused_write_loses_its_own_lines_not_the_turns_others() -> None:
    stream = RefusesFirst()
    lines = TurnLines(stream)
    sent = [f"{number:04d}" + "x" * 295 for number in range(20)]  # two writes' worth

    for line in sent:
        lines.info(line)
    await asyncio.sleep(0)

    per_write = select.PIPE_BUF // 300
    assert stream.getvalue().splitlines() == sent[per_write:]

"""The access lines wait up to a moment and go out together, in whole lines, in writes a pipe
takes in one piece."""

import asyncio
import io
import math
import select
import subprocess
import sys

import pytest

from api.core.logging import BatchedLines
from tests.support.app import ROOT

WAIT = 0.01  # the lines' wait in these tests: a tenth of a second in a server


def batched(stream: io.StringIO, wait: float = WAIT) -> BatchedLines:
    return BatchedLines(stream, wait=wait)


async def past_the_wait() -> None:
    """Until the lines waiting have been written: the loop runs its timers in the order they
    are due, so the flush, due first, has run when this sleep ends."""
    await asyncio.sleep(WAIT * 2)


class Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def test_lines_wait_and_go_out_together_in_one_write() -> None:
    stream = Writes()
    lines = batched(stream, wait=60)

    for number in range(3):
        lines.info(f"line {number}")
    for _ in range(3):
        await asyncio.sleep(0)  # turns of the loop end, and the lines still wait
    assert stream.writes == []

    lines.flush()
    assert stream.writes == ["line 0\nline 1\nline 2\n"]


async def test_each_batch_goes_out_when_its_wait_ends() -> None:
    stream = Writes()
    lines = batched(stream)

    lines.info("first")
    await past_the_wait()
    lines.info("second")
    await past_the_wait()

    assert stream.writes == ["first\n", "second\n"]


async def test_a_steady_stream_of_lines_does_not_hold_them_back() -> None:
    """A line joins the lines already waiting and goes out with them when the first one's wait
    ends, not a wait after itself."""
    stream = Writes()
    lines = batched(stream, wait=4 * WAIT)
    sent = [f"line {number}" for number in range(10)]

    for line in sent:
        lines.info(line)
        await asyncio.sleep(WAIT)
    assert stream.writes, "a steady stream of lines held them all back"
    assert stream.writes[0].startswith("line 0\n")

    lines.flush()
    assert stream.getvalue().splitlines() == sent


async def test_no_write_splits_a_line_or_is_larger_than_a_pipe_takes_in_one_piece() -> None:
    stream = Writes()
    lines = batched(stream)
    sent = [f"{number:04d}" + "x" * 295 for number in range(40)]  # 300 bytes with its newline

    for line in sent:
        lines.info(line)
    await past_the_wait()

    per_write = select.PIPE_BUF // 300  # 13 on Linux
    assert len(stream.writes) == math.ceil(40 / per_write)
    assert all(len(write) <= select.PIPE_BUF and write.endswith("\n") for write in stream.writes)
    assert stream.getvalue().splitlines() == sent


async def test_a_flush_writes_the_lines_at_once_and_the_waits_end_nothing_more() -> None:
    stream = Writes()
    lines = batched(stream)
    lines.info("at shutdown")

    lines.flush()
    assert stream.writes == ["at shutdown\n"]
    await past_the_wait()
    assert stream.writes == ["at shutdown\n"]


def test_outside_an_event_loop_a_line_is_written_at_once() -> None:
    stream = Writes()

    batched(stream, wait=60).info("alone")

    assert stream.writes == ["alone\n"]


async def test_a_write_is_measured_in_bytes_not_characters() -> None:
    stream = Writes()
    lines = batched(stream)
    sent = ["é" * 1500, "é" * 1500]  # 1,501 characters, 3,001 bytes each with the newline

    for line in sent:
        lines.info(line)
    await past_the_wait()

    assert [len(write.encode()) for write in stream.writes] == [3001, 3001]
    assert stream.getvalue().splitlines() == sent


class RefusesFirst(Writes):
    """A stream whose first write fails, as a closed pipe's would."""

    def write(self, text: str) -> int:
        if not self.writes:
            self.writes.append("(refused)")
            raise BrokenPipeError
        return super().write(text)


async def test_a_refused_write_loses_its_own_lines_not_the_others_waiting() -> None:
    stream = RefusesFirst()
    lines = batched(stream)
    sent = [f"{number:04d}" + "x" * 295 for number in range(20)]  # two writes' worth

    for line in sent:
        lines.info(line)
    await past_the_wait()

    per_write = select.PIPE_BUF // 300
    assert stream.getvalue().splitlines() == sent[per_write:]


@pytest.mark.parametrize("run", ["asyncio.run", "uvloop.run"])  # uvloop: uvicorn's
def test_lines_still_waiting_when_the_process_exits_are_written(run: str) -> None:
    """A line written after the lifespan's flush (a request cancelled at the end of a graceful
    shutdown), whose loop is gone before its wait ends: the process's exit writes it."""
    code = (
        "import asyncio, sys, uvloop\n"
        "from api.core import logging\n"
        "logging._ACCESS_LINES = logging.BatchedLines(sys.stdout, wait=60)\n"
        "async def request_cancelled_late():\n"
        "    logging._ACCESS_LINES.info('the last line')\n"
        f"{run}(request_cancelled_late())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "the last line\n"

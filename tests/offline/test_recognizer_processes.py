"""Speech recognition in worker processes: same words, supervised, gone with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtc_agent.offline.recognizer_processes import RecognizerDied, RecognizerProcesses
from tests.speech import speak_pcm, transcribe

QUESTION = "what is twelve times seven"


def alive(pid: int) -> bool:
    """The pid runs and is no zombie (a reaped or reparented child may linger as one)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture
def recognizer() -> Iterator[RecognizerProcesses]:
    restarts: list[int] = []
    r = RecognizerProcesses(2, on_restart=restarts.append)
    r.reported = restarts  # type: ignore[attr-defined]
    yield r
    pids = r.worker_pids()
    r.close()
    assert wait_gone(pids, 10) == []


def test_a_worker_hears_what_the_backend_would_hear_in_process(
        recognizer: RecognizerProcesses) -> None:
    pcm = speak_pcm(QUESTION)
    recognizer.warm()
    assert len(recognizer.worker_pids()) == 2
    assert recognizer.transcribe(pcm, 24000) == transcribe(pcm, 24000) == QUESTION
    assert recognizer.transcribe(pcm.tobytes(), 24000) == QUESTION  # bytes as well
    assert recognizer.restarts == 0


@pytest.mark.parametrize("text", ["what is nine plus four", "what is six times eight",
                                  "search for solar power"])
def test_passes_split_over_two_workers_hear_what_one_process_hears(
        recognizer: RecognizerProcesses, text: str) -> None:
    """With a second worker idle, the language model's pass and the grammar's run at
    once in two processes; the words chosen are the ones a single process chooses
    (the first two need the grammar: the language model hears "my post war" and
    "six times a day")."""
    pcm = speak_pcm(text)
    recognizer.warm()
    assert recognizer.transcribe(pcm, 24000) == transcribe(pcm, 24000) == text
    one = RecognizerProcesses(1, split_passes=False)
    try:
        assert one.transcribe(pcm, 24000) == text
    finally:
        one.close()


def test_two_utterances_are_decoded_at_once(recognizer: RecognizerProcesses) -> None:
    pcm = speak_pcm(QUESTION)
    recognizer.warm()
    heard: list[str] = []
    threads = [threading.Thread(target=lambda: heard.append(recognizer.transcribe(pcm, 24000)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert heard == [QUESTION] * 4
    assert len(recognizer.worker_pids()) == 2  # no more workers than the pool's size


def test_a_worker_that_died_idle_is_replaced_and_counted(recognizer: RecognizerProcesses) -> None:
    pcm = speak_pcm(QUESTION)
    recognizer.warm()
    before = recognizer.worker_pids()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    assert wait_gone(before, 10) == []
    assert recognizer.transcribe(pcm, 24000) == QUESTION
    assert recognizer.restarts == 2 and recognizer.reported == [1, 2]  # type: ignore[attr-defined]
    assert not set(recognizer.worker_pids()) & set(before)


def test_an_utterance_whose_worker_dies_mid_decode_is_decoded_again() -> None:
    pcm = speak_pcm(QUESTION)
    r = RecognizerProcesses(1)
    try:
        r.warm()
        (pid,) = r.worker_pids()
        heard: list[str] = []
        t = threading.Thread(target=lambda: heard.append(r.transcribe(pcm, 24000)))
        t.start()
        deadline = time.monotonic() + 30
        while not _busy(pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert heard == []  # the decode (~0.4 s) is under way
        os.kill(pid, signal.SIGKILL)
        t.join(60)
        assert heard == [QUESTION] and r.restarts == 1
        assert r.worker_pids() != [pid]
    finally:
        r.close()


def test_a_worker_that_dies_twice_on_one_utterance_is_an_error() -> None:
    """No endless retries: the second death is reported to the caller (the driver
    turns it into a failed transcription), and the next utterance gets a new worker."""
    r = RecognizerProcesses(1)
    try:
        r.warm()
        killed: list[int] = []

        def killer() -> None:
            deadline = time.monotonic() + 30
            while len(killed) < 2 and time.monotonic() < deadline:
                for pid in r.worker_pids():
                    if pid not in killed and _busy(pid):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                time.sleep(0.01)

        k = threading.Thread(target=killer)
        k.start()
        with pytest.raises(RecognizerDied):
            r.transcribe(speak_pcm(QUESTION), 24000)
        k.join(30)
        assert len(killed) == 2 and r.restarts == 2
        assert r.transcribe(speak_pcm(QUESTION), 24000) == QUESTION
    finally:
        r.close()


def _busy(pid: int) -> bool:
    """The worker is running (decoding), not asleep on its pipe."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "R"
    except FileNotFoundError:
        return False


def test_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    """However the backend ends (here SIGKILL, which runs no cleanup), its workers
    read EOF on their stdin and exit."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from rtc_agent.offline.recognizer_processes import RecognizerProcesses\n"
        "r = RecognizerProcesses(2)\n"
        "r.warm()\n"
        "print(*r.worker_pids(), flush=True)\n"
        "time.sleep(120)\n")
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        parent.kill()
        parent.wait(10)
        assert wait_gone(pids, 10) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()

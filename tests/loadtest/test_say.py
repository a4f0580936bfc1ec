"""`rtc-agent say`: prompt WAVs spoken by the offline backend's voice, as the load
tester's microphone reads them, and one clear line (exit 2) for each mistake."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from rtc_agent.cli import main
from rtc_agent.loadtest.microphone import Prompt
from rtc_agent.loadtest.received import FRAME_S, SAMPLE_RATE
from rtc_agent.loadtest.say import LEAD_SILENCE_S
from tests.speech import read_wav, transcribe

from .conftest import ROOT, offline_env


def _format(path: Path) -> tuple[int, int, int]:
    with wave.open(str(path), "rb") as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate()


@pytest.mark.slow
def test_say_writes_a_prompt_pocketsphinx_hears(tmp_path: Path) -> None:
    out = tmp_path / "q.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "rtc_agent.cli", "say", "what is nine plus four", "-o", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=offline_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{out}: ") and proc.stderr == ""
    # what the microphone plays as it is: mono, 16-bit, 48 kHz
    assert _format(out) == (1, 2, SAMPLE_RATE)
    pcm, rate = read_wav(out)
    assert 1.5 < len(pcm) / rate < 5
    assert transcribe(pcm, rate) == "what is nine plus four"
    prompt = Prompt.from_wav(out)
    # speech after the lead silence, so the caller's "speech end" is the words' end
    assert prompt.speech_start * FRAME_S == pytest.approx(LEAD_SILENCE_S, abs=0.1)
    assert prompt.speech_frames * FRAME_S < len(pcm) / rate - 0.3


@pytest.mark.slow
def test_say_speaks_any_text_and_words_given_apart(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w.wav"
    assert main(["say", "the", "weather", "is", "lovely", "today", "-o", str(out)]) == 0
    heard = transcribe(*read_wav(out)).split()
    assert {"lovely", "today"} <= set(heard) and "nine" not in heard, heard
    assert "'the weather is lovely today'" in capsys.readouterr().out
    # espeak, the backend's other engine, writes the same format
    robot = tmp_path / "e.wav"
    assert main(["say", "hello", "-o", str(robot), "--tts", "espeak"]) == 0
    assert _format(robot) == (1, 2, SAMPLE_RATE)
    assert Prompt.from_wav(robot).speech_frames > Prompt.from_wav(robot).speech_start


@pytest.mark.parametrize(("args", "message"), [
    (["say", "", "-o", "{tmp}/q.wav"], "nothing to say: the text is empty"),
    (["say", "  ", "\t", "-o", "{tmp}/q.wav"], "nothing to say: the text is empty"),
    (["say", "hi", "-o", "{tmp}/missing/q.wav"], "no such directory {tmp}/missing"),
    (["say", "hi", "-o", "{tmp}"], "cannot write {tmp}: it is a directory"),
    (["say", "hi", "-o", "{tmp}/file.txt/q.wav"], "{tmp}/file.txt is not a directory"),
])
def test_say_refuses_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   args: list[str], message: str) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("rtc-agent say: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # nothing written


def test_say_needs_an_output(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["say", "what is nine plus four"])
    assert info.value.code == 2
    assert "-o/--output" in capsys.readouterr().err


def readme_commands(section: str) -> list[list[str]]:
    """The shell commands of a README section's code blocks, continuations joined."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", body, re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.strip()]


def test_the_readme_makes_its_prompts_before_loadtest_reads_them() -> None:
    """From a fresh clone there are no prompt WAVs: the README's own `say` lines
    must make every file its `loadtest` lines read."""
    made: set[str] = set()
    prompts_read = 0
    for argv in readme_commands("Load testing"):
        assert argv[0] == ".venv/bin/rtc-agent", argv
        if argv[1] == "say":
            made.add(argv[argv.index("-o") + 1])
        elif argv[1] == "loadtest":
            start = argv.index("--prompts") + 1
            prompts = list(itertools.takewhile(lambda a: not a.startswith("-"), argv[start:]))
            assert prompts and set(prompts) <= made, (prompts, made)
            prompts_read += len(prompts)
    assert prompts_read >= 1

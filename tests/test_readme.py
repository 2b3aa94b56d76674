"""The README's examples run as written: the library example and the command-line session."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_block(language: str, after: str) -> str:
    """The first ``language`` code block after the heading ``after``."""
    section = README[README.index(after):]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_the_library_example_runs_on_the_bundled_sample(monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code_block("python", "## Library"), "README.md", "exec"), namespace)
    value = namespace["res"]["click", "gauc"]
    assert isinstance(value, float) and 0.5 < value < 1


def commands() -> list[list[str]]:
    """The command-line section's commands, joined across ``\\`` line ends, comments cut."""
    text = code_block("bash", "## Command line").replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_command_line_session_runs_as_written(tmp_path):
    session = commands()
    assert [c[:3] for c in session][:3] == [["python", "-m", "fusion"]] * 3
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in session:
        run = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, (command, run.stderr)
        if "--config" in command:
            assert "exported metrics reproduced exactly" in run.stdout
    assert (tmp_path / "config.json").is_file()

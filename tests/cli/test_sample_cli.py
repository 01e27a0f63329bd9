"""`rlft sample` refuses what it cannot use with one clear error (no traceback, no silent greedy)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["12+3=", "-n", "0"], "-n 0: give the number of completions to sample, 1 or more"),
        (["12+3=", "-n", "-2"], "-n -2: give the number of completions"),
        ([""], "The prompt is empty"),
        (["12+3=", "--temperature", "-1"], "--temperature -1.0: give a finite number >= 0"),
        (["12+3=", "--temperature", "nan"], "--temperature nan: give a finite number >= 0"),
        (["12+3=", "--max-new-tokens", "0"], "--max-new-tokens 0: give 1 or more"),
    ],
)
def test_bad_arguments_are_one_clear_error(tiny_model_dir, capsys, args, message):
    from rlft.cli.main import main

    assert main(["sample", str(tiny_model_dir), *args]) == 2  # main() is what `rlft` runs; a bug would raise
    out = capsys.readouterr()
    assert message in out.err and out.out == ""


def test_a_sampled_completion_starts_with_the_prompt(tiny_model_dir):
    out = subprocess.run([sys.executable, "-m", "rlft.cli.main", "sample", str(tiny_model_dir), "12+3=", "-n", "2",
                          "--temperature", "1.0", "--max-new-tokens", "3"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("12+3=") == 2

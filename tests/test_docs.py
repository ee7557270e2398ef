"""docs/API.md: every Python example on the page runs, in order, as a user would paste them."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).parents[1] / "docs" / "API.md"

pytestmark = pytest.mark.slow


def test_every_example_of_the_api_page_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 8
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for number, block in enumerate(blocks, 1):
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                try:
                    exec(compile(block, f"{PAGE.name} example {number}", "exec"), namespace)
                except Exception as error:
                    raise AssertionError(f"example {number} of {PAGE.name} fails:\n{block}") from error
            # a print(...) whose comment is a literal ([...], (4, 10), True, 4) shows what it prints
            printed = r"^[^#\n]*print\(.*#\s*(\[.*\]|\(\d+, \d+\)|False|True|\d+)$"
            for expected in re.findall(printed, block, flags=re.MULTILINE):
                assert expected in output.getvalue(), (number, expected, output.getvalue())
    finally:
        os.chdir(cwd)

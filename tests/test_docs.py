"""The Python blocks of the docs that teach the API run as written (in a fresh process each
page: their registrations must not leak into the other tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ["architecture.md", "python.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> str:
    """Every ```python block of ``page``, in order, as one script."""
    return "\n\n".join(BLOCK.findall(page.read_text()))


@pytest.mark.parametrize("page", PAGES)
def test_the_python_blocks_of_a_page_run(page, tmp_path):
    script = python_blocks(DOCS / page)
    assert script.strip(), f"docs/{page} has no python block"
    (tmp_path / "page.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, "page.py"], cwd=tmp_path, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, f"docs/{page}:\n{proc.stderr[-4000:]}"

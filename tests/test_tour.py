"""docs/tour.md runs as written: every code block on the page is checked here, so the tour cannot
drift away from the code.

- A ```python block is run, and what it prints must be the ```text block right after it (or
  nothing, when no ```text block follows). Each stop (a `## ` section) runs in a fresh namespace,
  its blocks in order, as a reader would paste them into a new interpreter.
- A ```python block whose first line is `# from PATH` quotes a file: its lines must be in PATH, in order.
- A ```console block is checked by tests/test_docs.py, as on every page of docs/.
- Each "**Open:**" line names files that exist and functions or classes defined in them.
"""
import contextlib
import io
import re
from pathlib import Path

import pytest

from helpers import blocks, sections

ROOT = Path(__file__).resolve().parent.parent
TOUR = ROOT / "docs" / "tour.md"


def runnable(body):
    """[(python source, expected output or None)] of a section: each python block that is not a
    quotation, with the text block that follows it directly."""
    items, pending = [], list(blocks(body))
    for k, (language, code, gap) in enumerate(pending):
        if language != "python" or code.startswith("# from "):
            continue
        follows = pending[k + 1] if k + 1 < len(pending) else None
        expected = follows[1] if follows and follows[0] == "text" and not gap.strip() else None
        items.append((code, expected))
    return items


PAGE = TOUR.read_text(encoding="utf-8")
STOPS = [(heading, body) for heading, body in sections(PAGE) if runnable(body)]


def _lines(text):
    return [line.rstrip() for line in text.rstrip("\n").splitlines()]


def test_the_page_has_its_stops_and_only_blocks_this_file_checks():
    assert len(STOPS) >= 10
    kinds = {language for _, body in sections(PAGE) for language, _, _ in blocks(body)}
    assert kinds <= {"python", "text", "console"}, f"a block this test does not check: {kinds}"
    for _, body in sections(PAGE):  # a text block must be some python block's output
        items = blocks(body)
        for k, (language, _, _) in enumerate(items):
            if language == "text":
                before = items[k - 1] if k else None
                assert before and before[0] == "python" and not before[2].strip(), \
                    "a ```text block that follows no ```python block"


@pytest.mark.parametrize("heading, body", STOPS, ids=[h.split(".")[0] for h, _ in STOPS])
def test_each_stop_prints_what_the_page_shows(heading, body):
    if "from numba import" in body:
        pytest.importorskip("numba", reason="the CUDA-kernel stop needs numba (pip install '.[dev]')")
    namespace = {"__name__": f"tour_stop_{heading.split('.')[0]}"}
    for number, (source, expected) in enumerate(runnable(body), 1):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(source, f"docs/tour.md, '{heading}', block {number}", "exec"), namespace)
        assert "\n".join(_lines(printed.getvalue())) == "\n".join(_lines(expected or "")), \
            f"'{heading}', block {number} printed something else than the page shows"


def test_quoted_code_is_in_the_file_it_names():
    quotes = [code for _, body in sections(PAGE) for language, code, _ in blocks(body)
              if language == "python" and code.startswith("# from ")]
    assert quotes
    for code in quotes:
        path = code.splitlines()[0].split()[2]
        source = [line.rstrip() for line in (ROOT / path).read_text(encoding="utf-8").splitlines()]
        position = 0
        for line in code.splitlines()[1:]:
            if not line.strip():
                continue
            assert line.rstrip() in source[position:], f"{path} has no line {line!r} (after line {position})"
            position = source.index(line.rstrip(), position) + 1


def test_open_lines_name_files_and_definitions_that_exist():
    opens = [line for line in PAGE.splitlines() if line.startswith("**Open:**")]
    assert len(opens) >= len(STOPS)
    for line in opens:
        files = [ROOT / path for path in re.findall(r"\]\(\.\./([^)]+)\)", line)]
        assert files and all(f.is_file() for f in files), line
        text = "\n".join(f.read_text(encoding="utf-8") for f in files)
        for name in re.findall(r"`([\w.]+)`", line):
            for part in name.split("."):
                assert re.search(rf"^\s*(def|class) {part}\b", text, re.M), f"{line}: no '{part}'"

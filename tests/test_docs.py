"""README.md and the pages of docs/ point only at what exists, and show only commands that run.

- Every relative link, [text](path) or [text](path#anchor), leads to a file of the repository and,
  with an anchor, to a heading of that page (anchors as GitHub makes them from headings).
- Every `$ python -m minivae ...` line of a ```console block is a command the command line
  accepts, and a profile table's heading is the one `profile` prints (its numbers are one
  machine's).
- README.md opens with the two commands (.ci/run runs the one under "## Run the tests"), and leads
  a newcomer to the tour and to the pages that hold the measurements.
(tests/test_cli.py checks README's "## The command line" block; tests/test_tour.py runs the tour.)
"""
import collections
import re
import shlex
from pathlib import Path

import pytest

from helpers import FENCE, blocks, sections
from minivae import cli, profile

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(text):
    """The page without its code blocks and inline code, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(text):
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as
    hyphens, and -1, -2, ... after a repeated one."""
    seen, found = collections.Counter(), set()
    for heading in re.findall(r"^#{1,6} (.+?)#*$", FENCE.sub("", text), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return found


def broken_links(page):
    """The relative links of a page that lead nowhere, each with the reason."""
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked here (no network)
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and anchor not in anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {file.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_a_broken_link_is_caught(tmp_path):
    (tmp_path / "there.md").write_text("# A page\n\n## Its part\n")
    page = tmp_path / "page.md"
    page.write_text("[fine](there.md#its-part) [gone](missing.md) [no part](there.md#elsewhere)\n"
                    "`[code](is-not-a-link.md)` [web](https://example.org/x.md)\n")
    assert [line.split(":")[0] for line in broken_links(page)] == ["missing.md", "there.md#elsewhere"]


def test_console_commands_parse_and_the_profile_table_has_todays_columns():
    consoles = [code for page in PAGES for _, body in sections(page.read_text(encoding="utf-8"))
                for language, code, _ in blocks(body) if language == "console"]
    assert consoles
    parser = cli._parser()
    commands = [shlex.split(line[2:]) for code in consoles for line in code.splitlines() if line.startswith("$ ")]
    for words in commands:
        while "=" in words[0]:  # an environment variable set for the command
            words = words[1:]
        assert words[:3] == ["python", "-m", "minivae"], f"not a minivae command: {' '.join(words)}"
        parser.parse_args(words[3:])  # exits (fails the test) on an option the command line lacks
    row = profile.Row("encoder.encoder_conv_0", "conv2d", [0.001], [0.002], [10 ** 6, 10 ** 6], "FLOP")
    report = profile.Report("foster", "cpu", 1, 1, 0, 1.0, 1.0, 64, 1, [row], 3.0, 3.0, 1.0, 2.0)
    heading = next(line for line in profile.format_report(report).splitlines() if line.startswith("layer"))
    shown = [line for code in consoles for line in code.splitlines() if line.startswith("layer")]
    assert shown and all(line == heading for line in shown)


def test_the_readme_opens_with_the_two_commands():
    (first, train), (second, tests) = sections(README.read_text(encoding="utf-8"))[:2]
    assert (first, second) == ("Train a VAE on MNIST", "Run the tests")
    assert "python -m minivae train" in blocks(train)[0][1]
    assert "pytest" in blocks(tests)[0][1]


def test_the_readme_is_short_and_leads_to_the_rest():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150, "README.md is for a newcomer; measurements belong in docs/"
    linked = {target.partition("#")[0] for target in LINK.findall(prose(text))}
    assert {"docs/tour.md", "docs/performance.md", "docs/gpu.md", "docs/quality.md"} <= linked

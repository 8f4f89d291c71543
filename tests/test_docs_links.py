"""The README is the front door and docs/ holds the rest: every relative link of theirs names a file of the
repository, and none leaves it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def links(page: Path) -> list[str]:
    """The targets of a page's markdown links and images, code blocks and inline code left out."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [a or b for a, b in LINK.findall(text)]


def test_the_link_pattern_finds_links_and_images_but_not_code(tmp_path):
    page = tmp_path / "probe.md"
    page.write_text("[a](x.md) ![b](y.png) `[c](z.md)`\n```\n[d](w.md)\n```\n[e](https://e.org) [f](#g)\n")
    assert links(page) == ["x.md", "y.png", "https://e.org", "#g"]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_names_a_file_in_the_repository(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor of the same page
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to nothing in the repository: {broken}"


def test_the_readme_stays_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 170
    assert "../shared" not in "\n".join(lines)
    # CI runs the README's second command; the first installs banel and runs its main job
    commands = [line.split("#")[0].strip() for line in lines[5:7]]
    assert commands == [
        "pip install torch==2.13.0 -e . && banel run toy1d",
        'pip install -e ".[ray,test]" && python -m pytest -q -n 2',
    ]
    assert "python3 -m pytest -q -n 2" in (ROOT / ".ci" / "run").read_text()

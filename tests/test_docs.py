"""The README and docs/: every relative link and #anchor resolves, every preset and every params
section is named, and the README stays a front page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens,
    repeats numbered."""
    found: dict[str, int] = {}
    out = set()
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for line in text.splitlines():
        match = re.match(r"^#{1,6} (.+?)\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
            n = found.get(slug, 0)
            found[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no {file.relative_to(REPO) if file.is_relative_to(REPO) else file}")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{page.name}: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    readme = {Path(t.partition("#")[0]).name for t in links(REPO / "README.md")}
    assert {p.name for p in PAGES[1:]} <= readme


def named_somewhere(word: str) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", p.read_text(encoding="utf-8")) for p in PAGES)


def test_every_preset_and_every_params_section_is_named():
    presets = yaml.safe_load((REPO / "presets.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert not [name for name in presets if not named_somewhere(name)]
    assert not [name for name in params if not named_somewhere(f"{name}") or not any(
        f"`{name}" in p.read_text(encoding="utf-8") for p in PAGES)]


def test_the_readme_is_a_front_page():
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 250

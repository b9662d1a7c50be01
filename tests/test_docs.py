"""The README stays a five-minute read and the docs/ pages stay connected to it.

* README.md is at most 12 KB;
* every relative link in README.md and docs/**/*.md points at an existing file (anchors not checked);
* the quick start names exactly the two commands ``./pk run`` and ``./pk test``;
* every docs page is linked from the README itself or from docs/index.md (which the README links).
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_BYTES = 12 * 1024

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())          # code blocks hold no links, only code
    return [m.group(1) for m in LINK.finditer(text)]


def _target(page: Path, link: str) -> Path | None:
    """The file a relative link points at; None for an external link or an anchor on the same page."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", link) or link.startswith("#"):
        return None
    return (page.parent / link.split("#", 1)[0]).resolve()


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes (limit {MAX_README_BYTES}): move detail into docs/"


def test_every_relative_link_resolves():
    broken = []
    for page in _pages():
        for link in _links(page):
            t = _target(page, link)
            if t is not None and not t.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link}")
    assert broken == [], "broken links:\n" + "\n".join(broken)


def test_quick_start_names_the_two_commands():
    readme = README.read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = FENCE.search(section)
    assert block, "the quick start has no code block"
    commands = [line.split("#", 1)[0].strip() for line in block.group(0).splitlines()[1:-1]]
    assert [c for c in commands if c] == ["./pk run", "./pk test"], commands


def _linked(page: Path) -> set[Path]:
    return {t for t in (_target(page, link) for link in _links(page)) if t is not None}


def test_every_docs_page_is_reachable_from_the_readme():
    index = (DOCS / "index.md").resolve()
    from_readme = _linked(README)
    assert index in from_readme, "README.md must link docs/index.md"
    seen = from_readme | _linked(index)
    unreachable = [str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md") if p.resolve() not in seen]
    assert unreachable == [], "not linked from README.md or docs/index.md: " + ", ".join(sorted(unreachable))

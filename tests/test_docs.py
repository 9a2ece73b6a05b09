"""The documentation: the mkdocs site builds under --strict, and the pages outside it (README.md,
CONTRIBUTING.md: GitHub shows them, mkdocs does not) link only to files and headings that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

REPO = Path(__file__).resolve().parents[1]
# Markdown files read in the repository (on GitHub), not built into the site.
REPO_PAGES = ["README.md", "CONTRIBUTING.md"]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def nav_pages(nav) -> list[str]:
    """Every page file named in mkdocs.yml's nav (nested sections included)."""
    pages: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages += nav_pages(value)
        elif not re.match(r"[a-z]+://", value):
            pages.append(value)
    return pages


def relative_links(markdown_text: str) -> list[str]:
    """Link targets of a Markdown text that are not URLs, code blocks and code spans left out."""
    text = CODE_SPAN.sub("", FENCE.sub("", markdown_text))
    return [t for t in LINK.findall(text) if not re.match(r"([a-z][a-z0-9+.-]*:|//)", t, re.I)]


def heading_ids(markdown_file: Path) -> set[str]:
    """The ids mkdocs (Python-Markdown's toc) and GitHub give the file's headings (same for plain titles)."""
    text = FENCE.sub("", markdown_file.read_text(encoding="utf-8"))
    titles = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)
    return {slugify(re.sub(r"[`*]", "", title), "-") for title in titles}


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """Relative links of the page whose file, or whose #heading in a Markdown file, does not exist."""
    broken = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(root) if file.is_relative_to(root) else file}")
        elif anchor and file.suffix == ".md" and anchor not in heading_ids(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(root)}")
    return broken


def test_site_builds_strict(tmp_path):
    """`make docs` as CI runs it: any mkdocs warning (a broken link or anchor, a page not in the nav) fails."""
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").is_file()
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = nav_pages(config["nav"])
    assert "index.md" in pages
    for page in pages:
        built = site / Path(page).with_suffix(".html")  # use_directory_urls: false, so it browses from disk
        assert built.is_file(), f"{page} from the nav was not built ({built.relative_to(site)} missing)"


@pytest.mark.parametrize("name", REPO_PAGES)
def test_repository_pages_link_to_existing_files(name):
    page = REPO / name
    assert relative_links(page.read_text(encoding="utf-8")), f"{name} has no relative links: is the parser broken?"
    assert broken_links(page) == []


def test_link_checker_finds_broken_links(tmp_path):
    """The checker itself: a missing file and a missing heading are reported, links in code are not."""
    (tmp_path / "there.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md#a-heading) [gone](missing.md) [bad anchor](there.md#nope) "
        "[web](https://example.com) `[code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "missing.md: no file missing.md",
        "there.md#nope: no heading #nope in there.md",
    ]

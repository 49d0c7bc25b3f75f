"""The README stays short, its number tables are what the generator writes from the committed results,
and every relative link in it and in docs/ points at something that exists (issue #26)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from benchmarks import readme_tables

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 350

LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
MODULE = re.compile(r"python -m (benchmarks(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def test_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES}: move detail to docs/)"


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text().split("\n## ", 2)[:2]
    text = "\n".join(head)
    assert "./run.sh demo" in text and "./run.sh test" in text


def test_generated_regions_are_current() -> None:
    assert sorted(n for names in readme_tables.PAGES.values() for n in names) == sorted(readme_tables.GENERATORS)
    for page, expected in readme_tables.PAGES.items():
        text = page.read_text()
        assert readme_tables.region_names(text) == list(expected), page
        assert readme_tables.render(text) == text, f"{page.name} is stale: run python -m benchmarks.readme_tables"


def test_generated_regions_are_not_empty() -> None:
    for name, generate in readme_tables.GENERATORS.items():
        assert generate().strip(), name


def test_render_rewrites_only_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readme_tables, "GENERATORS", {"demo": lambda: "new\n"})
    text = "intro\n<!-- generated: demo -->\nold\n<!-- end generated -->\noutro\n"
    assert readme_tables.render(text) == "intro\n<!-- generated: demo -->\nnew\n<!-- end generated -->\noutro\n"
    with pytest.raises(KeyError):
        readme_tables.render("<!-- generated: nothing -->\n<!-- end generated -->\n")


def _links(page: Path):
    for match in LINK.finditer(page.read_text()):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # absolute URLs, mailto:, in-page anchors
        yield unquote(target.split("#", 1)[0])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(page: Path) -> None:
    missing = [target for target in _links(page) if not (page.parent / target).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_benchmark_modules_exist(page: Path) -> None:
    missing = []
    for module in set(MODULE.findall(page.read_text())):
        path = ROOT.joinpath(*module.split("."))
        if not (path.with_suffix(".py").exists() or (path / "__init__.py").exists() or (path / "__main__.py").exists()):
            missing.append(module)
    assert not missing, f"{page.relative_to(ROOT)} names modules that do not exist: {sorted(missing)}"

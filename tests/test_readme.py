"""The docs stay true: every setting and every metric is documented in README.md or docs/*.md,
every relative link resolves, the `just` recipes named exist, and the README stays short."""

import re
from pathlib import Path
from urllib.parse import unquote

import msgspec
import pytest
from prometheus_client import REGISTRY

import dsw.metrics  # noqa: F401  (registers the metrics)
from dsw.config import Settings, env_name
from tests.conftest import ROOT

README_PATH = ROOT / "README.md"
README = README_PATH.read_text()
PAGES = [README_PATH, *sorted((ROOT / "docs").glob("*.md"))]
# Pages whose links are checked too: the docs, and the benchmarks' README that links into them.
LINKED_PAGES = [*PAGES, ROOT / "benchmarks" / "README.md"]
DOCS = "\n".join(page.read_text() for page in PAGES)
README_MAX_LINES = 150

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_LINK = re.compile(r"(?<!\\)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")
_JUST = re.compile(r"(?:^|[\s;&|(])just\s+([a-z][\w-]*)")
_RECIPE = re.compile(r"^@?([A-Za-z_][\w-]*)[^:=\n]*:(?!=)", re.MULTILINE)


def _prose_and_code(text: str) -> tuple[list[str], list[str]]:
    """The lines outside fenced code blocks, and those inside them."""
    prose: list[str] = []
    code: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return prose, code


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces to `-`."""
    text = _INLINE_LINK.sub(r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page, with GitHub's `-1`, `-2` suffixes for repeats."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    prose, _ = _prose_and_code(page.read_text())
    for line in prose:
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match[1])
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    """The targets of the page's markdown links that are not URLs, outside code."""
    prose, _ = _prose_and_code(page.read_text())
    # Code spans may run over a line break: strip them from the whole text, not line by line.
    text = _CODE_SPAN.sub("", "\n".join(prose))
    return [
        target
        for target in _LINK.findall(text)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)
    ]


def broken_link(page: Path, target: str) -> str | None:
    """Why `target`, linked from `page`, does not resolve; None if it does."""
    path_part, _, fragment = target.partition("#")
    destination = (page.parent / unquote(path_part)).resolve() if path_part else page
    if not destination.exists():
        return f"{page.relative_to(ROOT)}: {target}: no such file"
    if fragment and destination.suffix == ".md" and fragment not in anchors(destination):
        return f"{page.relative_to(ROOT)}: {target}: no such heading"
    return None


def justfile_recipes() -> set[str]:
    """The recipe names of the justfile: unindented `name ARGS: deps` lines (not `x := y`)."""
    text = (ROOT / "justfile").read_text()
    return {m[1] for m in _RECIPE.finditer(text) if not m[0].startswith(("set ", "export "))}


def just_commands(text: str) -> set[str]:
    """The recipes named as `just <recipe>` in the code of a page: spans and fenced blocks."""
    prose, code = _prose_and_code(text)
    snippets = code + [span.strip("`") for span in _CODE_SPAN.findall("\n".join(prose))]
    return {name for snippet in snippets for name in _JUST.findall(snippet)}


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"WORKER_[A-Z_]+", DOCS))
    missing = [
        env_name(f.name)
        for f in msgspec.structs.fields(Settings)
        if env_name(f.name) not in documented
    ]
    assert missing == []


def test_every_metric_is_documented() -> None:
    names = [
        family.name + ("_total" if family.type == "counter" else "")
        for family in REGISTRY.collect()
        if family.name.startswith("dsw_")
    ]
    assert names
    assert [name for name in names if f"`{name}`" not in DOCS] == []


def test_the_quick_start_commands_are_the_ci_s() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q rust-just && just test" in README
    assert "\npip install -q rust-just && just test\n" in ci
    assert "pip install -q rust-just && just run" in README


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    problems = [broken_link(page, target) for target in relative_links(page)]
    assert [p for p in problems if p] == []


def test_the_docs_link_every_page() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in relative_links(README_PATH)
        if target.partition("#")[0]
    }
    assert [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_just_recipe_named_exists(page: Path) -> None:
    recipes = justfile_recipes()
    named = just_commands(page.read_text())
    if page == README_PATH:
        assert {"run", "test", "provision"} <= named
    assert sorted(named - recipes) == []


def test_the_readme_is_short() -> None:
    assert len(README.splitlines()) <= README_MAX_LINES


def test_github_slugs() -> None:
    assert github_slug("Docker-out-of-Docker: the host's daemon from a container") == (
        "docker-out-of-docker-the-hosts-daemon-from-a-container"
    )
    assert github_slug("`dsw run` — one script") == "dsw-run--one-script"
    assert github_slug("[Reaper](x.md) and drain_timeout_s") == "reaper-and-drain_timeout_s"

"""Every relative link in the README and docs/ points at a file of the repository and, with #anchor, at a heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "notebooks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a '#' comment in a code block is no heading
    return {heading_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_relative_to(ROOT):  # ../shared/paper: beside the repository, not in a clone
            continue
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT)}")
        elif anchor and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.relative_to(ROOT)}")
    return broken


def test_heading_anchor_follows_github():
    assert (heading_anchor("Measured on a GPU (one NVIDIA H200, session 17)")
            == "measured-on-a-gpu-one-nvidia-h200-session-17")  # fmt: skip
    assert (heading_anchor("Real surfaces with the four defect types: `dynad synth --from-images` and the `cpu` preset")
            == "real-surfaces-with-the-four-defect-types-dynad-synth---from-images-and-the-cpu-preset")  # fmt: skip


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_a_broken_link_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Masks and more\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#masks-and-more) [gone](docs/b.md) [anchor](docs/a.md#masks) [out](../x.md)\n")
    assert broken_links(page) == ["docs/b.md: no file docs/b.md",
                                  "docs/a.md#masks: no heading with anchor #masks in docs/a.md"]  # fmt: skip

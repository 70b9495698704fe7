"""The book's user guide (vitreg.cli.guide): the README's how-to sections, its generated tables included."""

from __future__ import annotations

from vitreg.cli import guide
from vitreg.experiments import timing
from vitreg.utils.paths import repo_root

README = """# project

intro

## Two commands

Run `make smoke`; see [Data](#data) and [LICENSE](LICENSE), [the site](https://example.org).

```bash
## not a heading inside a code block
```

## Internal notes

left out

## Data

### Changing parameters

text
"""


def test_the_guide_keeps_the_how_to_sections_and_drops_the_rest():
    page = guide.guide_markdown(README)
    assert page.startswith("# User guide\n")
    assert "## Two commands" in page and "## Data\n\n### Changing parameters" in page
    assert "Internal notes" not in page and "left out" not in page
    assert "## not a heading inside a code block" in page, "a fenced block is kept whole"
    assert "see Data and LICENSE (`LICENSE`), [the site](https://example.org)." in page


def test_the_real_guide_shows_the_readmes_generated_run_time_table():
    page = guide.guide_markdown((repo_root() / "README.md").read_text())
    assert timing.render(markdown=True) in page
    assert all(f"## {title}" in page for title in ("Two commands", "Weights", "Data", "GPU", "References"))

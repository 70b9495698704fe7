"""The user guide page of the book: the README's how-to sections (commands, weights, data, parameters, run
time, the lecture profile, scan, GPUs, glossary, references), read from the README when the book is built, so
the guide and the README's generated tables never disagree.

Paper: none; how to run the notebooks that reproduce findings F1-F9.
"""

from __future__ import annotations

import re

#: The README's level-2 sections the guide shows, in this order (a missing one is left out).
SECTIONS = ("Two commands", "The notebooks", "Open the notebooks", "Weights", "Data", "Check your own ViT: vitreg scan", "GPU",
            "Several GPUs", "Environment", "Glossary", "References")
LOCAL_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\((?!https?:|mailto:|#)([^)\s]+)\)")
ANCHOR_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(#[^)\s]+\)")


def readme_sections(readme: str) -> dict[str, str]:
    """``{title: text}`` of every level-2 section of ``readme`` (its level-3 subsections included)."""
    sections: dict[str, str] = {}
    title, lines = None, []
    fence = False
    for line in readme.split("\n"):
        if line.startswith("```"):
            fence = not fence
        if line.startswith("## ") and not fence:
            if title is not None:
                sections[title] = "\n".join(lines).strip() + "\n"
            title, lines = line[3:].strip(), []
        elif title is not None:
            lines.append(line)
    if title is not None:
        sections[title] = "\n".join(lines).strip() + "\n"
    return sections


def guide_markdown(readme: str) -> str:
    """The user guide page (MyST Markdown) made from the README's :data:`SECTIONS`.

    Links to files of the checkout (``[LICENSE](LICENSE)``) become the file name in code (the book holds no
    checkout), and links to the README's own headings become plain text (the sections may not all be here).
    """
    sections = readme_sections(readme)
    parts = ["# User guide", "",
             "How to install, run and adapt the notebooks: the how-to sections of the project's README, as they "
             "stand in this checkout.", ""]
    for title in SECTIONS:
        if title in sections:
            body = ANCHOR_LINK.sub(r"\1", sections[title])
            body = LOCAL_LINK.sub(lambda m: f"{m.group(1)} (`{m.group(2)}`)" if "`" not in m.group(1)
                                  else f"{m.group(1)}", body)
            parts += [f"## {title}", "", body]
    return "\n".join(parts)

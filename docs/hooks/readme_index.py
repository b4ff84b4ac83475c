"""mkdocs hook: the site's home page is README.md, one source for both.

``docs/index.md`` is a placeholder; at build time its Markdown is replaced by README's with the
``docs/`` prefix taken off README's links and pictures (they point into this folder).
"""

from __future__ import annotations

import re
from pathlib import Path


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001
    """README's text for ``index.md``; every other page unchanged."""
    if page.file.src_uri != "index.md":
        return markdown
    readme = Path(config["config_file_path"]).parent / "README.md"
    return re.sub(r"\]\(docs/", "](", readme.read_text(encoding="utf-8"))

"""mkdocs hook: ``<!-- snngen-help: COMMAND -->`` in a page becomes that command's ``--help``.

The command line reference is printed by the parser itself at build time, so it cannot drift
from the code (``<!-- snngen-help -->`` alone gives ``snngen --help``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

MARKER = re.compile(r"<!-- snngen-help(?::\s*([a-z-]+))?\s*-->")


def help_text(command: str | None) -> str:
    """``snngen [COMMAND] --help`` as argparse prints it, 100 columns wide."""
    os.environ["COLUMNS"] = "100"
    from snngen.cli import build_parser

    parser = build_parser()
    if command is None:
        return parser.format_help()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices[command].format_help()


def on_config(config):  # noqa: ANN001, ANN201
    """Import snngen from this checkout's ``src/``."""
    src = str(Path(config["config_file_path"]).parent / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    return config


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001
    """Replace every help marker by a fenced block of the help text."""
    return MARKER.sub(lambda m: f"```text\n{help_text(m.group(1)).rstrip()}\n```", markdown)

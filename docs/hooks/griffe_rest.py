"""griffe extension: show snngen's reST-flavoured docstrings as Markdown in the API pages.

Only the rendering changes, never a docstring: ``:class:`~a.b.C``` becomes `` `C` ``
(`` `a.b.C` `` without the ``~``), a ``>>>`` session becomes a fenced ``pycon`` block, and a
paragraph's closing ``::`` (reST's "a literal block follows") becomes ``:`` before the
indented block, which Markdown shows as code.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([\w.]+)`")


def _role(m: re.Match) -> str:
    name = m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2)
    return f"`{name}`"


def to_markdown(text: str) -> str:
    """The docstring ``text`` with reST roles, doctest sessions and ``::`` made Markdown."""
    out: list[str] = []
    session = False
    for line in ROLE.sub(_role, text).splitlines():
        is_session = line.lstrip().startswith((">>>", "... "))
        if is_session and not session:
            out.append("```pycon")
        elif session and not is_session:
            out.append("```")
        session = is_session
        if not session and line.rstrip().endswith("::"):
            line = line.rstrip()[:-1] if line.strip() != "::" else ""
        out.append(line)
    if session:
        out.append("```")
    return "\n".join(out)


class ReSTToMarkdown(griffe.Extension):
    """Rewrite every loaded object's docstring text for Markdown rendering."""

    def on_object(self, *, obj: griffe.Object, **kwargs: object) -> None:
        """Convert ``obj``'s docstring in place (the loaded copy only)."""
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)

"""A griffe extension for the API reference: gmsense's docstrings use a few reStructuredText
habits (``:func:`name``` roles, ``::`` before a literal block) that Markdown would show verbatim.
Each role becomes a code span of the name (its last part when written ``~a.b.name``); a
paragraph ending in ``::`` ends in ``:``. The docstrings themselves are not changed.

Loaded by mkdocs.yml (``extensions: [docs/griffe_rst_roles.py:RstRoles]``); not part of the site.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|exc|obj|const|type):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def markdown_docstring(text: str) -> str:
    """``text`` with reStructuredText roles and ``::`` literal-block markers made Markdown."""
    text = _ROLE.sub(_role, text)
    return re.sub(r"(?<=\S)::[ \t]*$", ":", text, flags=re.MULTILINE)


class RstRoles(griffe.Extension):
    """Rewrites every docstring griffe loads with :func:`markdown_docstring`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)

"""Griffe extension for the API reference: Sphinx-style roles in docstrings render as code.

The docstrings of UniCTR use reStructuredText roles (``:func:`x```, ``:class:`~a.B```) and double
back-quotes; mkdocstrings renders Markdown, so ``:role:`target``` becomes ```target``` (a ``~``
prefix keeps only the last name) and ````code```` becomes ```code```.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def markdown(text: str) -> str:
    def role(match: re.Match) -> str:
        target = match.group(1)
        if match.group(0).split("`", 1)[1].startswith("~"):
            target = target.rsplit(".", 1)[-1]
        return f"`{target}`"

    return ROLE.sub(role, text).replace("``", "`")


class SphinxRolesAsCode(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)

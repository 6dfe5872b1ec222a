"""Griffe extension for the API reference: the reStructuredText bits of the docstrings, as Markdown.

The docstrings are Google style but use a few Sphinx roles and directives, which Markdown would print
literally (``:class:`~a.b.C` ``) or misread (the brackets of ``[j = y](...)`` in a formula as a link):

* ``:class:`~pkg.mod.Name` `` (also ``:func:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``,
  ``:obj:``, ``:exc:``) becomes inline code, ``Name`` with the ``~`` prefix as in Sphinx, ``pkg.mod.Name``
  without it, and ``()`` after functions and methods;
* ``:math:`expr` `` becomes inline code holding the LaTeX source;
* a ``.. math::`` directive and its indented block become a fenced ``latex`` code block.

Loaded by mkdocstrings through ``extensions`` in ``mkdocs.yml``; the source files are not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(class|func|meth|mod|attr|data|obj|exc):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*$")


def _role(match: re.Match[str]) -> str:
    kind, short, target = match.groups()
    name = target.rsplit(".", 1)[-1] if short else target
    return f"`{name}()`" if kind in ("func", "meth") else f"`{name}`"


def _depth(line: str) -> int:
    return len(line) - len(line.lstrip())


def _math_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        directive = _MATH_DIRECTIVE.match(lines[index])
        if directive is None:
            out.append(lines[index])
            index += 1
            continue
        indent = directive.group(1)
        block: list[str] = []
        index += 1
        while index < len(lines) and (not lines[index].strip() or _depth(lines[index]) > len(indent)):
            block.append(lines[index])
            index += 1
        while block and not block[-1].strip():
            block.pop()
        body = [line for line in block if line.strip()]
        depth = min((_depth(line) for line in body), default=len(indent))
        out.append(f"{indent}```latex")
        out.extend(indent + line[depth:] if line.strip() else "" for line in block)
        out.append(f"{indent}```")
        if index < len(lines) and lines[index].strip():
            out.append("")
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    """The docstring `text` with its Sphinx roles and math directives rewritten as Markdown.

    Example:
        >>> rst_to_markdown("see :class:`~a.b.C` and :math:`x^2`")
        'see `C` and `x^2`'
    """
    return _MATH_ROLE.sub(r"`\1`", _ROLE.sub(_role, _math_blocks(text)))


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring of the loaded objects before mkdocstrings parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)

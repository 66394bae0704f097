"""Sphinx configuration: ``python -m sphinx -W -b html docs docs/_build/html``."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import logsvc  # noqa: E402  (needs the repository on the path)

project = "logsvc"
copyright = "the logsvc authors"
release = version = logsvc.__version__

extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "none"

# The docstrings are written in epytext, as Twisted's are: L{x} and C{x} become
# literals, I{x} emphasis and B{x} bold.
_MARKUP = {"L": "``", "C": "``", "I": "*", "B": "**"}
_START = re.compile(r"(?<![A-Za-z])([LCIB])\{")


def epytextToRST(text: str) -> str:
    """Epytext inline markup as reStructuredText, braces nested inside kept."""
    out, position = [], 0
    while match := _START.search(text, position):
        depth, end = 1, match.end()
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        if depth:
            break
        inner = " ".join(text[match.end():end - 1].split())
        quote = _MARKUP[match.group(1)]
        before = "\\ " if text[match.start() - 1:match.start()].isalnum() else ""
        after = "\\ " if text[end:end + 1].isalnum() else ""
        out.append(text[position:match.start()]
                   + (before + quote + inner + quote + after if inner else ""))
        position = end
    return "".join(out) + text[position:]


def _convert(app, what, name, obj, options, lines) -> None:
    converted = epytextToRST("\n".join(lines)).split("\n")
    lines[:] = converted


def setup(app) -> None:
    app.connect("autodoc-process-docstring", _convert)

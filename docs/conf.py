"""
Sphinx configuration for the demux documentation.

Build with::

    python -m sphinx -W -b html docs docs/_build/html

The only requirement is Sphinx itself (see docs/requirements.txt) and an
importable demux (an installed one, or this source tree, which is put first
on the path below).
"""

from __future__ import annotations

import os
import re
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_here))

project = "demux"
author = "the demux authors"
copyright = "the demux authors"

try:
    from importlib.metadata import version as _version

    release = _version("demux")
except Exception:
    release = ""
version = release

extensions = ["sphinx.ext.autodoc"]

exclude_patterns = ["_build", "requirements.txt"]
root_doc = "index"
language = "en"
highlight_language = "none"

html_theme = "alabaster"
html_title = "demux"
html_theme_options = {
    "description": "Many protocols on one TCP port, with Twisted.",
    "fixed_sidebar": True,
}

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"undoc-members": False}


# demux's docstrings are written in epytext, as Twisted's are (C{code},
# L{link}, @param, @ivar ...).  Sphinx reads reStructuredText, so each
# docstring is translated as autodoc reads it: inline markup becomes literal
# text and fields become Sphinx info fields.

_INLINE = {"C": "``{}``", "L": "``{}``", "I": "*{}*", "B": "**{}**", "U": "{}"}
_FIELDS = {
    "param": "param",
    "type": "type",
    "ivar": "ivar",
    "cvar": "cvar",
    "var": "var",
    "raise": "raises",
    "raises": "raises",
    "return": "returns",
    "returns": "returns",
    "rtype": "rtype",
    "note": "note",
    "see": "see",
}
_FIELD = re.compile(r"^(\s*)@(\w+)(\s+[^:]*)?:(.*)$")


def _inline(text: str) -> str:
    """
    Replace epytext's X{...} markup (with balanced braces inside) by reST.
    """
    out = []
    i = 0
    while i < len(text):
        if (
            i + 1 < len(text)
            and text[i] in _INLINE
            and text[i + 1] == "{"
            and (i == 0 or not text[i - 1].isalnum())
        ):
            depth = 0
            j = i + 1
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j < len(text):
                inner = text[i + 2 : j]
                if text[i] in "CL":
                    inner = inner.replace("``", "` `") or " "
                    out.append("``" + inner + "``")
                else:
                    out.append(_INLINE[text[i]].format(_inline(inner)))
                i = j + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _epytextToRest(app, what, name, obj, options, lines):  # type: ignore[no-untyped-def]
    result = []
    for line in lines:
        line = _inline(line)
        field = _FIELD.match(line)
        if field is not None and field.group(2) in _FIELDS:
            indent, kind, argument, rest = field.groups()
            argument = (argument or "").strip()
            role = _FIELDS[kind]
            line = f"{indent}:{role}{' ' + argument if argument else ''}:{rest}"
            if result and result[-1].strip():
                result.append("")
        result.append(line)
    lines[:] = result


_INTERFACE_REPR = re.compile(r"<InterfaceClass (?:[\w.]+\.)?(\w+)>")


def _cleanSignature(app, what, name, obj, options, signature, annotation):  # type: ignore[no-untyped-def]
    """
    Show zope.interface interfaces in signatures by name, not by their repr.
    """

    def clean(text):  # type: ignore[no-untyped-def]
        return None if text is None else _INTERFACE_REPR.sub(r"\1", text)

    return clean(signature), clean(annotation)


_KINDS = [
    ("removal", "Behaviour changes"),
    ("feature", "Features"),
    ("bugfix", "Fixes"),
]


def _changelog():  # type: ignore[no-untyped-def]
    """
    The C{changelog} directive: the news fragments in C{changelog.d/}, one
    file per change (C{NAME.KIND.rst}, as towncrier names them), grouped by
    kind, so that a change's note is written once, beside the change, and
    read here.
    """
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    class Changelog(SphinxDirective):
        def run(self):  # type: ignore[no-untyped-def]
            directory = os.path.join(os.path.dirname(_here), "changelog.d")
            names = sorted(n for n in os.listdir(directory) if n.endswith(".rst"))
            lines = []
            for kind, title in _KINDS:
                entries = [n for n in names if n.endswith(f".{kind}.rst")]
                if not entries:
                    continue
                lines += [f"**{title}**", ""]
                for name in entries:
                    path = os.path.join(directory, name)
                    self.env.note_dependency(path)
                    with open(path, encoding="utf-8") as f:
                        text = " ".join(f.read().split())
                    lines += [f"- {text}", ""]
            node = nodes.container()
            self.state.nested_parse(StringList(lines, "changelog.d"), 0, node)
            return node.children

    return Changelog


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("autodoc-process-docstring", _epytextToRest)
    app.connect("autodoc-process-signature", _cleanSignature)
    app.add_directive("changelog", _changelog())

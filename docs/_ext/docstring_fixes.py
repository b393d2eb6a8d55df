"""Two scikit-learn docstring idioms that plain reStructuredText misreads.

Connected to ``autodoc-process-docstring`` before numpydoc runs:

* a parameter type line continued with a trailing backslash (scikit-learn
  writes long types as ``... callable, \\`` + newline + ``default='linear'``,
  which only works in non-raw docstrings) is joined with its next line;
* a word ending in an underscore (``n_features_in_``, ``labels_``) outside
  backquotes and literal blocks is a hyperlink reference in rst and fails the
  build; its underscore is escaped.
"""

from __future__ import annotations

import re

_TRAILING = re.compile(r"(?<![\w`\\])([A-Za-z]\w*?)_(?![\w`])")
_SPANS = re.compile(r"(``.*?``|`[^`]*`_{0,2}|:\w+:`[^`]*`)")


def _escape_line(line):
    parts = _SPANS.split(line)
    return "".join(p if i % 2 else _TRAILING.sub(r"\1\\_", p) for i, p in enumerate(parts))


def _indent(line):
    return len(line) - len(line.lstrip())


def fix_lines(lines):
    """Return ``lines`` with backslash continuations joined and trailing underscores escaped.

    Parameters
    ----------
    lines : list of str
        Docstring lines.

    Returns
    -------
    lines : list of str
    """
    joined = []
    for line in lines:
        if joined and joined[-1].rstrip().endswith("\\") and not joined[-1].rstrip().endswith(
                "\\\\"):
            joined[-1] = joined[-1].rstrip()[:-1].rstrip() + " " + line.strip()
        else:
            joined.append(line)
    out, literal_indent, in_doctest = [], None, False
    for line in joined:
        stripped = line.strip()
        if not stripped:
            in_doctest = False
            out.append(line)
            continue
        if literal_indent is not None and _indent(line) > literal_indent:
            out.append(line)
            continue
        literal_indent = None
        if stripped.startswith(">>>") or in_doctest:
            in_doctest = True
            out.append(line)
            continue
        if stripped.endswith("::") or stripped.startswith(".. "):
            literal_indent = _indent(line)
        out.append(_escape_line(line))
    return out


def _process(app, what, name, obj, options, lines):
    lines[:] = fix_lines(lines)


def setup(app):
    app.connect("autodoc-process-docstring", _process, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

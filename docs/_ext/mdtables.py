"""Turn the benchmark scripts' markdown reports into reStructuredText for Sphinx.

The benchmark scripts write plain markdown (headings, paragraphs, bullet
lists, pipe tables, images, fenced code) into ``docs/benchmarks/*.md`` so the
same files read well on GitHub and can be spliced into the README. Sphinx
reads reStructuredText, and adding a markdown parser dependency only for
these tables is not worth it, so this module converts that small subset:

* headings become ``rubric`` directives (they never clash with the section
  structure of the page that includes them);
* pipe tables become ``list-table`` directives, rows padded to equal width;
* text is escaped, except ``code``, **bold** and [links](url), which are
  rebuilt with escaped-whitespace guards so they are valid in any context.

The output is warning-free under ``sphinx -W`` whatever the text contains
(the test suite checks this with docutils).
"""

from __future__ import annotations

import re
from pathlib import Path

_TOKEN = re.compile(r"(`[^`]+`|\*\*[^*]+\*\*|!?\[[^\]]*\]\([^)]*\))")
_SPECIAL = re.compile(r"([\\`*_|\[\]<>])")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_STRUCTURE = re.compile(
    r"^([-+*\u2022]\s|(\d+|[A-Za-z#]|[ivxlcdmIVXLCDM]+)[.)](\s|$)|\(\w+\)(\s|$)|:|\.\.(\s|$)"
    r"|[-=+#:.~^'\"_*]{2,}\s*$)"
)
_BLANK = "\\ "  # an escaped space: an empty but valid rst text


def inline(text):
    """Convert one line of markdown inline text to safe reStructuredText.

    Parameters
    ----------
    text : str
        Markdown inline text.

    Returns
    -------
    rst : str
    """
    out = []
    for part in _TOKEN.split(text.strip()):
        if not part:
            continue
        if part.startswith("`") and part.endswith("`") and len(part) > 2:
            body = part[1:-1].strip()
            out.append(f"\\ ``{body}``\\ " if body else "")
        elif part.startswith("**") and part.endswith("**") and len(part) > 4:
            body = _SPECIAL.sub(r"\\\1", part[2:-2].strip())
            out.append(f"\\ **{body}**\\ " if body else "")
        elif part.startswith("[") or part.startswith("!["):
            label, url = re.match(r"!?\[([^\]]*)\]\(([^)]*)\)", part).groups()
            out.append(_SPECIAL.sub(r"\\\1", f"{label} ({url})"))
        else:
            out.append(_SPECIAL.sub(r"\\\1", part))
    rst = "".join(out).strip()
    if rst.startswith("\\ "):
        rst = rst[2:]
    if rst.endswith("\\"):
        rst = rst[:-1].rstrip()
    # A leading list, enumeration, field or comment marker would change the structure.
    if _STRUCTURE.match(rst):
        rst = "\\" + rst
    return rst


def _starts_block(line):
    s = line.strip()
    return (not s or s.startswith(("```", "#", "|")) or bool(_BULLET.match(line))
            or bool(_IMAGE.match(s)))


def _split_row(line):
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)]


def _table(lines):
    rows = [_split_row(line) for line in lines if not _TABLE_RULE.match(line)]
    width = max(len(r) for r in rows)
    header = 1 if len(lines) > 1 and _TABLE_RULE.match(lines[1]) else 0
    out = [".. list-table::", f"   :header-rows: {header}", ""]
    for row in rows:
        row = row + [""] * (width - len(row))
        for j, cell in enumerate(row):
            text = inline(cell)
            out.append(("   * - " if j == 0 else "     - ") + text if text else
                       ("   * -" if j == 0 else "     -"))
    return out + [""]


def markdown_to_rst(text, *, image_root="/benchmarks"):
    """Convert a benchmark report (a markdown subset) to reStructuredText.

    Parameters
    ----------
    text : str
        Markdown.
    image_root : str, default="/benchmarks"
        Sphinx path (source-root absolute) that relative image paths are
        resolved against.

    Returns
    -------
    rst : str
    """
    lines = re.sub(r"<!--.*?-->", "", text, flags=re.S).splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            out.append("")
            i += 1
        elif stripped.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            body = [("   " + x) if x.strip() else "" for x in lines[i + 1:j]] or ["   (empty)"]
            out += ["", ".. code-block:: text", ""] + body + [""]
            i = j + 1
        elif stripped.startswith("#"):
            title = inline(stripped.lstrip("#").strip()) or _BLANK
            out += ["", f".. rubric:: {title}", ""]
            i += 1
        elif stripped.startswith("|"):
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            out += [""] + _table([x.strip() for x in lines[i:j]])
            i = j
        elif _IMAGE.match(stripped):
            alt, src = _IMAGE.match(stripped).groups()
            if not re.match(r"^[a-z]+://|^/", src):
                src = f"{image_root.rstrip('/')}/{src}"
            out += ["", f".. image:: {src}", f"   :alt: {alt or 'figure'}", ""]
            i += 1
        elif _BULLET.match(line):
            items = [_BULLET.match(line).group(1)]
            i += 1
            while i < len(lines) and lines[i].strip():
                m = _BULLET.match(lines[i])
                if m:
                    items.append(m.group(1))
                elif _starts_block(lines[i]):
                    break
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            out += [""] + [f"- {inline(item) or _BLANK}" for item in items] + [""]
        else:
            para = [stripped]
            i += 1
            while i < len(lines) and not _starts_block(lines[i]):
                para.append(lines[i].strip())
                i += 1
            out += ["", inline(" ".join(para)), ""]
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def convert_folder(src, dest, *, names=(), image_root="/benchmarks"):
    """Convert every ``src/*.md`` to ``dest/*.rst``; write placeholders for missing ``names``.

    Parameters
    ----------
    src : path-like
        Folder of markdown reports.
    dest : path-like
        Output folder (created).
    names : iterable of str, default=()
        Report names (without ``.md``) that pages include; a missing one gets
        a placeholder page saying how to generate it, so the docs always
        build.
    image_root : str, default="/benchmarks"
        Passed to :func:`markdown_to_rst`.

    Returns
    -------
    written : list of pathlib.Path
    """
    src, dest = Path(src), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for md in sorted(src.glob("*.md")):
        rst = markdown_to_rst(md.read_text(encoding="utf-8"), image_root=image_root)
        target = dest / f"{md.stem}.rst"
        if not target.exists() or target.read_text(encoding="utf-8") != rst:
            target.write_text(rst, encoding="utf-8")
        written.append(target)
    for name in names:
        target = dest / f"{name}.rst"
        if not (src / f"{name}.md").exists():
            target.write_text(
                f".. note::\n\n   ``docs/benchmarks/{name}.md`` has not been generated in this "
                "checkout yet; run the command above to produce it.\n", encoding="utf-8")
            written.append(target)
    return written

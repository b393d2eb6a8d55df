"""Docs plumbing: markdown reports convert to warning-free rst; README splicing; page wiring.

The full Sphinx build (``python -m sphinx -W -b html docs docs/_build``) runs in
``.ci/run``; these tests check the parts that can break it, quickly.
"""

import ast
import importlib
import importlib.util
import inspect
import io
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mdtables = _load(DOCS / "_ext" / "mdtables.py", "mdtables")
update_readme = _load(REPO / "benchmarks" / "update_readme.py", "update_readme")

TRICKY = """# Title with *stars* and `code`

Some text_with_underscores, a | pipe, a [link](http://example.org) and <html>.
`code` at the start, then **bold**± glued to a symbol, and 2 * 3.
1. looks like a list
- a bullet with `x`
  continued here
* another bullet
| a | b |
|:--|--:|
| 0.58 ± 0.03 | |
| **0.70**x | `k` | extra cell |

```
raw block
```
![Figure](fig.png)
-leading dash
"""


def _rst_problems(rst):
    docutils_core = pytest.importorskip("docutils.core")  # comes with the 'docs' extra
    stream = io.StringIO()
    docutils_core.publish_doctree(
        rst, settings_overrides={"warning_stream": stream, "report_level": 2,
                                 "halt_level": 5})
    return stream.getvalue()


def test_tricky_markdown_converts_without_warnings():
    rst = mdtables.markdown_to_rst(TRICKY)
    assert _rst_problems(rst) == ""
    assert ".. list-table::" in rst and ".. rubric::" in rst
    assert ".. image:: /benchmarks/fig.png" in rst
    # every table row has the width of the widest row
    assert rst.count("     - extra cell") == 1
    assert re.search(r"\* - 0\.58 ± 0\.03\n     -\n     -\n", rst)


def test_inline_text_is_escaped_but_code_and_bold_survive():
    assert mdtables.inline("a_b *c*") == r"a\_b \*c\*"
    assert mdtables.inline("`x_y` and **z**") == r"``x_y``\  and \ **z**"
    assert mdtables.inline("1. item").startswith("\\")


@pytest.mark.parametrize("report", sorted((DOCS / "benchmarks").glob("*.md")),
                         ids=lambda p: p.name)
def test_generated_reports_convert_without_warnings(report):
    assert _rst_problems(mdtables.markdown_to_rst(report.read_text(encoding="utf-8"))) == ""


def test_missing_reports_get_placeholders(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "present.md").write_text("# T\n\n| a |\n|---|\n| 1 |\n")
    written = mdtables.convert_folder(src, tmp_path / "out", names=["present", "absent"])
    assert sorted(p.name for p in written) == ["absent.rst", "present.rst"]
    assert "has not been generated" in (tmp_path / "out" / "absent.rst").read_text()
    assert ".. list-table::" in (tmp_path / "out" / "present.rst").read_text()


def test_pages_include_only_known_reports():
    conf = (DOCS / "conf.py").read_text()
    known = set(re.findall(r'"(\w+)"', conf.split("REPORTS = (", 1)[1].split(")", 1)[0]))
    included = set()
    for page in DOCS.rglob("*.rst"):
        if "_build" in page.parts or "_generated" in page.parts:
            continue
        included |= set(re.findall(r"\.\. include:: /_generated/(\w+)\.rst", page.read_text()))
    assert included and included <= known


def test_every_reproduction_page_is_in_the_toctree():
    index = (DOCS / "benchmarks" / "index.rst").read_text()
    pages = {p.stem for p in (DOCS / "benchmarks").glob("*.rst")} - {"index"}
    listed = set(re.findall(r"^   (\w+)$", index, flags=re.M))
    assert pages == listed


def test_readme_quick_start_and_markers():
    readme = (REPO / "README.md").read_text()
    assert 'pip install -e ".[dev]" && skcce demo' in readme
    cpu = readme.index("--index-url https://download.pytorch.org/whl/cpu")
    assert cpu < readme.index('pip install -e ".[dev]"')  # CPU torch first
    assert "skcce bench" not in readme and "SKCCE_DATA" in readme
    assert 'pip install -e ".[dev]" && python -m pytest' in readme
    assert readme.count(update_readme.START) == 1 and readme.count(update_readme.END) == 1
    assert "Collision Cross-entropy for Soft Class Labels and Deep Clustering" in readme


def test_readme_splice_copies_tables_and_is_idempotent(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "solvers.md").write_text(
        "# Solvers\n\nMachine: x; date: 2026-01-02 03:04 UTC.\n\n"
        "| solver | s |\n|---|---|\n| EM | 0.1 |\n\ntrailing text\n\n| zzz | table |\n")
    section = update_readme.results_section(str(reports))
    assert "| EM | 0.1 |" in section and "zzz" not in section
    assert "2026-01-02 03:04 UTC" in section
    assert "Not generated yet: run `python benchmarks/bench_deep.py`" in section
    readme = f"intro\n{update_readme.START}\nold\n{update_readme.END}\nend\n"
    once = update_readme.splice(readme, section)
    assert "old" not in once and once.endswith("end\n")
    assert update_readme.splice(once, section) == once
    with pytest.raises(ValueError, match="markers"):
        update_readme.splice("no markers", section)


def _conf_value(name):
    """A literal assigned in docs/conf.py (read without running it)."""
    for node in ast.parse((DOCS / "conf.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not set in docs/conf.py")


def test_no_docstring_rewriting_at_build_time():
    assert not (DOCS / "_ext" / "docstring_fixes.py").exists()
    assert "docstring_fixes" not in (DOCS / "conf.py").read_text()
    assert "all" in _conf_value("numpydoc_validation_checks")
    # only style checks are left out; the structural ones stay on
    left_out = _conf_value("numpydoc_validation_checks") - {"all"}
    assert left_out <= {"SA01", "ES01", "RT02"}


# Modules whose docstrings this docs build validates in full (the others are excluded by name
# in conf.py until their rewrite lands).
VALIDATED = ("skcce.cli", "skcce.datasets", "skcce.plotting", "skcce.features",
             "skcce.backbones", "skcce.networks")


def _public_objects(module_name):
    module = importlib.import_module(module_name)
    for name in module.__all__:
        obj = getattr(module, name)
        if getattr(obj, "__module__", None) != module_name:
            continue  # re-exported: validated where it is defined
        if inspect.isfunction(obj):
            yield f"{module_name}.{name}"
        elif inspect.isclass(obj):
            yield f"{module_name}.{name}"
            for attr, value in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(value):
                    yield f"{module_name}.{name}.{attr}"


@pytest.mark.parametrize("module_name", VALIDATED)
def test_numpydoc_validation_passes(module_name):
    validate = pytest.importorskip("numpydoc.validate")  # the 'docs' extra
    ignored = _conf_value("numpydoc_validation_checks") - {"all"}
    problems = []
    for name in _public_objects(module_name):
        errors = [f"{code} {msg}" for code, msg in validate.validate(name)["errors"]
                  if code not in ignored]
        problems += [f"{name}: {e}" for e in errors]
    assert not problems, "\n".join(problems)


def test_deep_guide_documents_augment_as_the_code_calls_it():
    import torch

    from skcce.augment import call_augment

    guide = " ".join((DOCS / "guide" / "deep.rst").read_text().split())
    assert "``augment(x)`` or ``augment(x, generator)``" in guide
    # what the guide promises: a one-argument callable is called with the batch only ...
    seen = []
    out = call_augment(lambda x: seen.append(x.shape) or x.flip(-1), torch.zeros(2, 1, 4, 4),
                       torch.Generator())
    assert seen == [torch.Size([2, 1, 4, 4])] and out.shape == (2, 1, 4, 4)
    # ... and one with a generator parameter receives the loop's generator
    gen = torch.Generator()
    got = []
    call_augment(lambda x, generator: got.append(generator) or x, torch.zeros(2, 1, 4, 4), gen)
    assert got == [gen]


def test_first_table_after_a_heading():
    md = "# R\n\n| a |\n|---|\n| 1 |\n\n## Speedup at K\n\n| b |\n|---|\n| 2 |\n"
    assert update_readme.first_table(md) == ["| a |", "|---|", "| 1 |"]
    assert update_readme.first_table(md, "Speedup") == ["| b |", "|---|", "| 2 |"]
    assert update_readme.first_table(md, "absent") == ["| a |", "|---|", "| 1 |"]


def test_readme_results_are_generated_and_readable():
    assert update_readme.main(["--check"]) == 0  # the README is what the script writes
    readme = (REPO / "README.md").read_text()
    section = readme.split(update_readme.START)[1].split(update_readme.END)[0]
    for report in update_readme.REPORTS:
        block = section.split(f"#### {report.heading}\n", 1)[1].split("#### ")[0]
        assert report.caption in block
        if "Not generated yet" in block:
            continue
        assert "\nLegend: **" in block
        table = [[c.strip() for c in line.strip().strip("|").split("|")]
                 for line in block.splitlines() if line.startswith("|")]
        header, rows = table[0], table[2:]
        assert "M" not in header
        assert not any("effnet" in cell for row in rows for cell in row)
        # no two rows with the same measurements, times included (a configuration shown
        # twice; two configurations can reach the same labels, as n_init=3 keeping the
        # restart equal to the single fit, but not in the same time)
        name_at = header.index("method") if "method" in header else 0
        measured = [i for i, c in enumerate(header) if i != name_at]
        keyed = [tuple(row[i] for i in measured) for row in rows]
        assert len(keyed) == len(set(keyed)), report.name


def test_same_configuration_rows_are_merged_only_when_equal():
    report = update_readme.Report("r", "R", "cmd", "caption", [("a", "b")],
                                  values={"dataset": {"d": "Data D"}}, columns={"t": "time"},
                                  same={"default": "cross"}, timing=("t",))
    table = ["| dataset | method | acc | t |", "|---|---|---|---|",
             "| d | cross | 1.0 | 3 |", "| d | default | 1.0 | 4 |", "| d | other | 2.0 | 5 |"]
    out = update_readme.readable_table(table, report)
    assert out == ["| dataset | method | acc | time |", "|---|---|---|---|",
                   "| Data D | default (= cross) | 1.0 | 4 |", "| Data D | other | 2.0 | 5 |"]
    table[3] = "| d | default | 1.5 | 4 |"  # measured cells differ: both rows stay
    assert len(update_readme.readable_table(table, report)) == 5

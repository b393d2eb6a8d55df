"""Splice the benchmark reports' tables into README.md.

The benchmark scripts write markdown reports into ``docs/benchmarks/``. This
script copies the first table of each report (with its title and the date it
states) between the ``<!-- results:start -->`` and ``<!-- results:end -->``
markers of the README, so the README's numbers always come from a run and
are never typed by hand. Reports that do not exist yet are listed with the
command that generates them.

Usage::

    python benchmarks/update_readme.py [--readme README.md] [--check]

``--check`` exits with status 1 when the README is out of date (for CI).
"""

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- results:start -->", "<!-- results:end -->"

# (report, heading in the README, command that generates it, text of the heading that the
# summary table follows in the report, or None for the report's first table)
REPORTS = (
    ("fixed_features", "Fixed features (paper Table 2)",
     "python benchmarks/bench_fixed_features.py", None),
    ("fixed_features_mnist70k", "Fixed features, all 70,000 MNIST digits as raw pixels",
     "python benchmarks/bench_fixed_features.py --datasets mnist "
     "--output docs/benchmarks/fixed_features_mnist70k.md", None),
    ("solvers", "EM vs projected gradient descent (paper Table 1)",
     "python benchmarks/bench_solvers.py", "Speedup"),
    ("deep", "Deep clustering, CPU scale (paper Table 3)", "python benchmarks/bench_deep.py",
     None),
    ("weak", "Weak supervision (paper Table 4)", "python benchmarks/bench_weak.py", None),
    ("noisy_labels", "Noisy labels (paper Figure 2)", "python benchmarks/bench_noisy_labels.py",
     None),
)


def first_table(markdown, after=None):
    """Lines of the first pipe table in ``markdown`` (after the heading containing ``after``).

    Falls back to the first table of the report when no heading contains ``after``;
    returns an empty list when there is no table.
    """
    lines, table = markdown.splitlines(), []
    if after is not None:
        starts = [i for i, line in enumerate(lines)
                  if line.lstrip().startswith("#") and after in line]
        if starts:
            lines = lines[starts[0]:]
    for line in lines:
        if line.strip().startswith("|"):
            table.append(line.rstrip())
        elif table:
            break
    return table


def report_date(markdown):
    """The ``date: ...`` a report states, or None."""
    match = re.search(r"date:\s*([0-9]{4}-[0-9]{2}-[0-9]{2}[0-9: ]*(UTC)?)", markdown)
    return match.group(1).strip() if match else None


def results_section(reports_dir):
    """Markdown for the README's results section."""
    out = []
    for name, heading, command, after in REPORTS:
        path = os.path.join(reports_dir, f"{name}.md")
        out.append(f"#### {heading}")
        out.append("")
        if not os.path.exists(path):
            out += [f"Not generated yet: run `{command}`.", ""]
            continue
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        table = first_table(text, after)
        date = report_date(text)
        out += table if table else ["(the report has no table)"]
        stated = re.search(r"Command:\s*`([^`]+)`", text)
        source = f"`{stated.group(1) if stated else command}`" + (f", run {date}" if date else "")
        out += ["", f"Full report with the machine: [docs/benchmarks/{name}.md]"
                f"(docs/benchmarks/{name}.md) ({source}).", ""]
    return "\n".join(out).rstrip() + "\n"


def splice(readme_text, section):
    """Replace the text between the markers; raise ValueError if they are missing."""
    if START not in readme_text or END not in readme_text:
        raise ValueError(f"README has no {START} ... {END} markers")
    head, rest = readme_text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{section}{END}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    parser.add_argument("--reports", default=os.path.join(ROOT, "docs", "benchmarks"))
    parser.add_argument("--check", action="store_true",
                        help="only check that the README is up to date")
    args = parser.parse_args(argv)
    with open(args.readme, encoding="utf-8") as fh:
        old = fh.read()
    try:
        new = splice(old, results_section(args.reports))
    except ValueError as exc:
        print(f"update_readme: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if new != old:
            print("README.md results are out of date: run python benchmarks/update_readme.py",
                  file=sys.stderr)
            return 1
        return 0
    if new != old:
        with open(args.readme, "w", encoding="utf-8") as fh:
            fh.write(new)
    print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

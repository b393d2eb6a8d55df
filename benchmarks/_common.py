"""Small helpers shared by the benchmark scripts.

Every benchmark states the machine it ran on and writes its own markdown
table, so the numbers in ``docs/benchmarks/`` can always be traced back to
one run of one script.

A ``--quick`` run (a smoke test) never writes into ``docs/``: its report
goes to :func:`quick_output_dir`, a temporary folder, whatever path the
script asked for inside ``docs/``.  :func:`write_markdown` applies this to
every script; a script that writes other files (a figure) passes their
paths through :func:`output_path`.
"""

import argparse
import datetime
import os
import platform
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
#: Environment variable that overrides the folder of the ``--quick`` reports.
QUICK_OUTPUT_ENV = "SKCCE_QUICK_OUTPUT"


def quick_output_dir():
    """Return the folder that receives the files of ``--quick`` runs.

    Returns
    -------
    path : str
        ``$SKCCE_QUICK_OUTPUT`` when set, else ``skcce-quick-benchmarks`` in
        the system's temporary folder.
    """
    return os.environ.get(QUICK_OUTPUT_ENV) or os.path.join(tempfile.gettempdir(),
                                                            "skcce-quick-benchmarks")


def _inside_docs(path):
    path = os.path.realpath(os.fspath(path))
    docs = os.path.realpath(DOCS)
    return os.path.commonpath([path, docs]) == docs


def output_path(path, quick):
    """Return where a benchmark's output file goes: never into ``docs/`` for a quick run.

    Parameters
    ----------
    path : str or path-like
        The path the script was asked to write.
    quick : bool
        Whether this is a ``--quick`` (smoke) run.

    Returns
    -------
    path : str
        ``path`` itself, or for a quick run aimed inside ``docs/`` the same
        file name in :func:`quick_output_dir`.
    """
    if quick and _inside_docs(path):
        return os.path.join(quick_output_dir(), os.path.basename(os.fspath(path)))
    return os.fspath(path)


def _caller_is_quick(header_text, depth=4):
    """Whether the calling script runs ``--quick``.

    Every script parses its options into an ``argparse.Namespace`` named
    ``args`` with a ``quick`` flag, in ``main`` or in the report function
    that ``main`` calls; the stated command line is the fallback.
    """
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            break
        args = frame.f_locals.get("args")
        if isinstance(args, argparse.Namespace) and hasattr(args, "quick"):
            return bool(args.quick)
        frame = frame.f_back
    command = header_text.split("Command:", 1)[1].split("\n", 1)[0] if "Command:" in header_text \
        else ""
    return "--quick" in command.replace("`", " ").split()


def _version(name):
    try:
        module = __import__(name)
    except ImportError:
        return "not installed"
    return getattr(module, "__version__", "unknown")


def _threads():
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
    env = ", ".join(f"{k}={os.environ[k]}" for k in keys if k in os.environ)
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_threads = "n/a"
    try:
        import numba

        numba_threads = numba.get_num_threads()
    except ImportError:
        numba_threads = "n/a"
    text = f"torch threads {torch_threads}, numba threads {numba_threads}"
    return f"{text} ({env})" if env else text


def machine_description():
    """Return a one-paragraph description of the machine and software.

    Returns
    -------
    text : str
        Platform, processor, CPU count, thread settings, Python, torch, numpy
        and numba versions, and the current UTC date and time.
    """
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.platform()}; cpu: {cpu}; cpu count: {os.cpu_count()}; "
        f"{_threads()}; python {platform.python_version()}; "
        f"torch {_version('torch')}; numpy {_version('numpy')}; "
        f"numba {_version('numba')}; date: {now}"
    )


def _cell(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_markdown(path, title, header_text, rows, *, quick=None):
    """Write a markdown report with one table.

    Parameters
    ----------
    path : str or path-like
        Output file; parent folders are created.  A quick run aimed inside
        ``docs/`` writes to :func:`quick_output_dir` instead (see
        :func:`output_path`) and says so.
    title : str
        Level-1 heading.
    header_text : str
        Free text placed between the heading and the table (method,
        machine description, notes).
    rows : list of dict
        Table rows; the keys of the first row give the columns, in order.
        Floats are printed with 4 significant digits.
    quick : bool, optional
        Whether this is a ``--quick`` run; by default read from the calling
        script's ``args.quick`` (or ``--quick`` in the stated command).

    Returns
    -------
    text : str
        The markdown that was written.
    """
    if quick is None:
        quick = _caller_is_quick(header_text)
    target = output_path(path, quick)
    if target != os.fspath(path):
        print(f"quick run: report written to {target}, not {path} (docs/ is left as it is)")
    path = target
    lines = [f"# {title}", "", header_text.strip(), ""]
    if rows:
        columns = list(rows[0])
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in rows:
            lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
        lines.append("")
    text = "\n".join(lines)
    dirname = os.path.dirname(os.fspath(path))
    if dirname:
        os.makedirs(dirname, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return text

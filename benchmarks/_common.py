"""Small helpers shared by the benchmark scripts.

Every benchmark states the machine it ran on and writes its own markdown
table, so the numbers in ``docs/benchmarks/`` can always be traced back to
one run of one script.
"""

import datetime
import os
import platform


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


def write_markdown(path, title, header_text, rows):
    """Write a markdown report with one table.

    Parameters
    ----------
    path : str or path-like
        Output file; parent folders are created.
    title : str
        Level-1 heading.
    header_text : str
        Free text placed between the heading and the table (method,
        machine description, notes).
    rows : list of dict
        Table rows; the keys of the first row give the columns, in order.
        Floats are printed with 4 significant digits.

    Returns
    -------
    text : str
        The markdown that was written.
    """
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

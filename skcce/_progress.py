"""The one helper that makes the package's progress bars (importable without torch).

Every long phase shown with ``verbose > 0`` (the neighbour graph, each
restart's epochs, the refinement, the final evaluation, predictions, the
model selection, feature extraction) gets its bar from :func:`progress_bar`:
a tqdm bar with a rate and an ETA, on stderr, cleared when done unless told
otherwise, and silent with ``verbose=0``.
"""

from __future__ import annotations

__all__ = ["progress_bar"]


def progress_bar(iterable=None, *, verbose, desc, total=None, leave=False, **kwargs):
    """A tqdm bar with rate and ETA over ``iterable`` or ``total`` steps, shown if ``verbose > 0``.

    The one place where the package's progress bars are made.  With
    ``verbose <= 0`` the bar is a disabled tqdm: it iterates over
    ``iterable`` unchanged, its ``update``, ``set_postfix`` and ``close``
    do nothing, and it writes nothing.  No bar draws random numbers.

    Parameters
    ----------
    iterable : iterable, default=None
        What to iterate over; None for a bar advanced by ``update``.
    verbose : int or bool
        The bar is shown when ``verbose > 0``.
    desc : str
        Label of the bar (the phase, e.g. ``'epochs'`` or ``'restart 2/5 refine'``).
    total : int, default=None
        Number of steps; by default ``len(iterable)`` when it has one.
    leave : bool, default=False
        Keep the finished bar on screen (False: its line is cleared).
    **kwargs : dict
        Further keyword arguments of :class:`tqdm.tqdm` (e.g. ``unit``).

    Returns
    -------
    bar : tqdm.tqdm
        The bar, iterable over ``iterable``; ``tqdm.auto`` when shown
        (a widget in notebooks), to stderr.

    Examples
    --------
    >>> from skcce._progress import progress_bar
    >>> bar = progress_bar(range(3), verbose=0, desc="restarts")
    >>> list(bar)
    [0, 1, 2]
    >>> bar.close()
    """
    if verbose > 0:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm  # the plain class: no notebook detection for a silent bar

        kwargs["disable"] = True
    return tqdm(iterable, desc=desc, total=total, leave=leave, **kwargs)

"""Sphinx configuration for the skcce documentation.

Build with ``python -m sphinx -W -b html docs docs/_build``. Nothing here
needs the network: no intersphinx inventories are fetched.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # autodoc documents this checkout

import mdtables  # noqa: E402

import skcce  # noqa: E402

# The benchmark scripts write markdown reports into docs/benchmarks/; the
# reproduction pages include their reStructuredText conversion.
REPORTS = ("fig1", "solvers", "fixed_features", "fixed_features_mnist70k",
           "fixed_features_mnist70k_refine", "fixed_features_temi", "fixed_features_restarts",
           "fixed_features_restarts_digits", "fixed_features_label_free_cnn",
           "fixed_features_label_free_pixels",
           "defaults_sweep", "deep",
           "deep_ablation", "deep_forward_reverse", "noisy_labels", "weak", "neighbors", "scale",
           "model_selection", "merge", "throughput", "throughput_collapse", "throughput_causes",
           "profile_step", "profile_step_8429dc0")
mdtables.convert_folder(HERE / "benchmarks", HERE / "_generated", names=REPORTS)

project = "skcce"
author = "the skcce developers"
copyright = "the skcce developers"
release = skcce.__version__
version = skcce.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
]

exclude_patterns = ["_build", "_generated", "_ext", "benchmarks/*.md"]
templates_path = []
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "alabaster"
html_static_path = []
html_theme_options = {"description": "collision cross-entropy clustering for scikit-learn"}

# numpydoc validation: every check, except three that are about style rather than
# correctness. SA01 (a See Also section) and ES01 (an extended summary) are optional
# sections that short helpers do not need; RT02 rejects named single return values
# ("labels : ndarray of shape (n_samples,)"), which numpydoc's format allows and
# scikit-learn's docstrings (the house style) use throughout.
numpydoc_validation_checks = {"all", "SA01", "ES01", "RT02"}
numpydoc_validation_exclude = set()

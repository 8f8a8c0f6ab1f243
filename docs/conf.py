"""Sphinx configuration of the trvae-scvi docs.

Build (from the repository root, with the ``docs`` extra installed)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The tutorials (``tutorials/*.ipynb``, reached through the ``docs/tutorials`` link) are executed
during the build, so every figure and number on their pages comes from that run. They train
with the model's default number of epochs unless ``TRVAE_TUTORIAL_EPOCHS`` is set; the test
``tests/test_docs.py`` sets it to a small value.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

import trvae_scvi

project = "trvae-scvi"
author = "trvae-scvi developers"
copyright = "trvae-scvi developers"
version = release = trvae_scvi.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxcontrib.bibtex",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# -- MyST and notebook execution ----------------------------------------------------------------
myst_enable_extensions = ["amsmath", "colon_fence", "dollarmath"]
myst_heading_anchors = 3
nb_execution_mode = "force"  # run every tutorial on every build: figures come from this run
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True  # and its traceback is in the log
nb_execution_timeout = 3600  # seconds per cell; training with the default epochs takes minutes
nb_execution_in_temp = True  # files a tutorial writes (saved models) do not land in the sources
nb_output_stderr = "remove"  # progress bars and library warnings, not results
nb_merge_streams = True

# -- API reference ------------------------------------------------------------------------------
autosummary_generate = False  # the API page documents objects in place; no generated stubs
autodoc_member_order = "bysource"
autodoc_typehints = "description"  # types from the signatures, next to each parameter
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True

bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "trvae-scvi"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}


class FigureGlob(SphinxDirective):
    """``{figure-glob} pattern``: one figure per file matching ``pattern`` (relative path).

    Used for the benchmark's figures, whose set is whatever the benchmark script last wrote;
    the caption is the part of the file name matched by ``*``. No match is an error.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """One figure node per matching file, in name order."""
        pattern = self.arguments[0]
        _, absolute = self.env.relfn2path(pattern, self.env.docname)
        paths = sorted(glob.glob(absolute))
        if not paths:
            raise self.error(f"no file matches {pattern!r}; run the script that writes it.")
        prefix, _, suffix = os.path.basename(pattern).partition("*")
        figures = []
        for path in paths:
            self.env.note_dependency(path)
            name = os.path.basename(path)
            label = name[len(prefix) : len(name) - len(suffix)]
            uri = str(Path(os.path.dirname(pattern)) / name)
            figure = nodes.figure("", nodes.image(uri=uri, alt=label), nodes.caption(text=label))
            figures.append(figure)
        return figures


def setup(app):
    """Register the ``figure-glob`` directive."""
    app.add_directive("figure-glob", FigureGlob)

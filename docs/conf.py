"""Sphinx configuration for the pescador documentation (``make docs``)."""

import pescador

project = "pescador"
author = "The pescador developers"
copyright = "2026, the pescador developers"
release = pescador.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports = ["torch"]  # pescador.torch is documented without installing PyTorch
exclude_patterns = ["_build"]
html_theme = "alabaster"

# Figures drawn at build time from real runs (see plots.py).  They are made
# when the builder starts, before any page is read, so ``.. image::`` finds
# them; importing this file (as pytest does) draws nothing.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _draw_figures(app):
    import plots

    plots.make_all()


def setup(app):
    app.connect("builder-inited", _draw_figures)

# A wider page than alabaster's default, so that examples of up to about 110
# characters show without a horizontal scroll bar.
html_theme_options = {"page_width": "1280px", "sidebar_width": "230px", "font_size": "16px"}

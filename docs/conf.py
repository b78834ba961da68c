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
exclude_patterns = ["_build"]
html_theme = "alabaster"

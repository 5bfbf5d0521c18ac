"""A local web app over a results folder: browse grids, prompt a checkpoint, start and watch a grid.

    python -m app [--results-dir results] [--port 7860]

A standard-library HTTP server (`app.server`) and one self-contained page (`page.html`,
inline JS/CSS, no CDN), so it runs with no network and nothing to install.
"""

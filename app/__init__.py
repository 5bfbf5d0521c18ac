"""A local web app over a results folder: browse grids, prompt a checkpoint, start, watch and stop a grid.

    python -m app [--results-dir results] [--port 7860]

A Starlette application served by uvicorn on 127.0.0.1 (`app.server`) and one page
(`page.html`) whose scripts and styles come from this package, so it runs with no network.
"""

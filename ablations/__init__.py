"""Grids of training runs: expand a YAML grid into cells, train and score each, store the results."""

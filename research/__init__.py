"""Models, data, tokenizers and the one LightningModule: everything a single run needs.

Nothing here imports `ablations`, `evals` or `paper`; dependencies point one way.
"""

"""The paper: LaTeX tables and figures regenerated from results folders alone (`python -m paper.build`)."""

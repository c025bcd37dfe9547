"""Serving: a retrained model exported with its vocabularies as a self-describing bundle, and a scorer of
raw logs (`autoias-serve export|score`).

`bundle.py` writes and checks a bundle (no Lightning); `score.py` streams raw rows through the bundle's
encoder and its `torch.export` program (no Lightning, no search, no model code); `export.py` reads a
retrain checkpoint (the one module here that imports `autoias_pl.retrain`, hence Lightning); `cli.py` is
the command line.
"""

"""Experiment drivers on top of the library: the demo, the several-seed comparison, the paper's ablations.

Each is a command (`python -m autoias_pl.experiments.<name>`); nothing in the library imports them.
"""

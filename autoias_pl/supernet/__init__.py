"""The supernet: elastic ops, interaction functions, the weight-sharing supernet and the export to a model.

`export` lives in `autoias_pl.supernet.export` (not re-exported here: the function would shadow its module).
"""

from autoias_pl.supernet.supernet import Supernet

__all__ = ["Supernet"]

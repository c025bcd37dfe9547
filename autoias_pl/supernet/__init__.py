"""The supernet: elastic ops, interaction functions, the weight-sharing supernet and the export to a model."""

from autoias_pl.supernet.export import export
from autoias_pl.supernet.supernet import Supernet

__all__ = ["Supernet", "export"]

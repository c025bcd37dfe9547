"""The supernet: elastic ops, the weight-sharing supernet, and `extract_model`: one architecture of it as a
standalone `CTRModel` with the supernet's weights (supernet/extract.py)."""

from autoias_pl.supernet.extract import extract_model
from autoias_pl.supernet.supernet import Supernet

__all__ = ["Supernet", "extract_model"]

"""autoias-pl: AutoIAS (Wei, Wang, Zhu, CIKM 2021) in PyTorch Lightning."""

__version__ = "0.1.0"

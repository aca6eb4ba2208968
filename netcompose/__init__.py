"""netcompose: a declarative topology reconciler for Linux container networking."""
from .engine import Project

__all__ = ["Project"]
__version__ = "0.1.0"

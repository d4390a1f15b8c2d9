"""The neoarray client: a ZODB storage over a neoarray cluster."""
from .storage import NeoStorage

__all__ = ["NeoStorage"]

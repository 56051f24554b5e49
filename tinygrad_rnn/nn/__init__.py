"""Neural-network building blocks: ``functional`` (stateless), modules, recurrent layers."""
from . import functional

__all__ = ["functional"]

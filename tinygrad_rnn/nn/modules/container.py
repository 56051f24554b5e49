"""``torch.nn.modules.container``'s path for :class:`tinygrad_rnn.nn.Sequential` and ``ModuleList``."""
from ..module import ModuleList, Sequential

__all__ = ["Sequential", "ModuleList"]

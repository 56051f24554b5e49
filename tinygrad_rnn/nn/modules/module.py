"""``torch.nn.modules.module``'s path for :class:`tinygrad_rnn.nn.Module`."""
from ..module import Module

__all__ = ["Module"]

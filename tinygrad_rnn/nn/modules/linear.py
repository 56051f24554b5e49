"""``torch.nn.modules.linear``'s path for :class:`tinygrad_rnn.nn.Linear`."""
from ..module import Linear

__all__ = ["Linear"]

"""``torch.nn.modules.sparse``'s path for :class:`tinygrad_rnn.nn.Embedding`."""
from ..module import Embedding

__all__ = ["Embedding"]

"""``torch.nn.modules.dropout``'s path for :class:`tinygrad_rnn.nn.Dropout`."""
from ..module import Dropout

__all__ = ["Dropout"]

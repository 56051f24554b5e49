"""``torch.nn.modules.activation``'s path for :class:`tinygrad_rnn.nn.Tanh` and friends."""
from ..module import ReLU, Sigmoid, Tanh

__all__ = ["Tanh", "ReLU", "Sigmoid"]

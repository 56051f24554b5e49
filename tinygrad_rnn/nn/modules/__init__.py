"""PyTorch's module paths for the layers, as aliases: ``tr.nn.modules.rnn.LSTM`` is ``tr.nn.LSTM``.

Programs name classes by these paths (``torch.serialization.safe_globals([torch.nn.modules.rnn.LSTM])``),
so the same lines run with ``tinygrad_rnn`` imported as ``torch``. The layers themselves live in ``nn/``.

    >>> import tinygrad_rnn as tr
    >>> tr.nn.modules.sparse.Embedding is tr.nn.Embedding
    True
"""
from . import activation, container, dropout, linear, loss, module, rnn, sparse
from .activation import ReLU, Sigmoid, Tanh
from .container import ModuleList, Sequential
from .dropout import Dropout
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss, NLLLoss
from .module import Module
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .sparse import Embedding

__all__ = ["activation", "container", "dropout", "linear", "loss", "module", "rnn", "sparse", "Module", "Linear",
           "Embedding", "Dropout", "Sequential", "ModuleList", "Tanh", "ReLU", "Sigmoid", "RNN", "LSTM", "GRU",
           "RNNCell", "LSTMCell", "GRUCell", "CrossEntropyLoss", "NLLLoss", "MSELoss"]

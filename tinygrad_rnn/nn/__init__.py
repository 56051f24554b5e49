"""Neural-network building blocks: modules, recurrent layers, ``functional``, ``init``, ``utils``.

    >>> import tinygrad_rnn as tr
    >>> tr.nn.LSTM(4, 8, num_layers=2).weight_hh_l1.shape
    (32, 8)
"""
from . import functional, parallel
from .module import Dropout, Embedding, Linear, Module, ModuleList, Parameter, ReLU, Sequential, Sigmoid, Tanh, load, save
from .recurrent import Recurrent, scan  # compiled user cells (issue 19)
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["functional", "parallel", "Module", "Parameter", "Linear", "Embedding", "Dropout", "Sequential", "ModuleList",
           "Tanh", "ReLU", "Sigmoid", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "save", "load",
           "Recurrent", "scan"]

try:  # these land with the training-toolkit modules
    from . import diagnostics, init, utils  # noqa: F401

    __all__ += ["diagnostics", "init", "utils"]
except ImportError:  # pragma: no cover
    pass

"""Neural-network building blocks: modules, recurrent layers, ``functional``, ``init``, ``utils``.

    >>> import tinygrad_rnn as tr
    >>> tr.nn.LSTM(4, 8, num_layers=2).weight_hh_l1.shape
    (32, 8)
"""
from . import diagnostics, functional, init, modules, parallel, utils  # modules: PyTorch's paths (nn.modules.rnn.LSTM)
from .loss import CrossEntropyLoss, MSELoss, NLLLoss
from .module import Dropout, Embedding, Linear, Module, ModuleList, Parameter, ReLU, Sequential, Sigmoid, Tanh, load, save
from .recurrent import Recurrent, scan  # compiled user cells (issue 19)
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["functional", "modules", "parallel",
           "diagnostics", "init", "utils", "Module", "Parameter", "Linear", "Embedding", "Dropout",
           "Sequential", "ModuleList", "Tanh", "ReLU", "Sigmoid", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
           "save", "load", "CrossEntropyLoss", "NLLLoss", "MSELoss", "Recurrent", "scan"]

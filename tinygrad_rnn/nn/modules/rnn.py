"""``torch.nn.modules.rnn``'s path for the recurrent layers and cells."""
from ..rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]

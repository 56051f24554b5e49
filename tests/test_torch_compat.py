"""PyTorch programs run unchanged: each program below is written once, against a module ``torch``
passed in, and run twice, with real ``torch`` and with ``tinygrad_rnn`` in its place. Same initial
weights (torch's, handed over as NumPy arrays through ``load_state_dict``) and the same data give
the same losses, to float32 or float64 tolerance.

The programs use only what PyTorch RNN code uses every day: ``torch.utils.data``, ``nn.LSTM`` /
``nn.GRU`` / ``nn.LSTMCell``, ``nn.utils.rnn``'s packing, the loss modules, ``optim`` (Adam, SGD,
L-BFGS with and without the strong-Wolfe line search) and ``ReduceLROnPlateau``, and three classic
programs as written (a word LM with manual SGD through ``p.data``, text generation with ``multinomial``
and ``topk``, pytorch/examples' time-sequence prediction, and pytorch/examples' word LM as written:
``init_hidden`` with ``new_zeros``, ``narrow`` batching, SGD through ``p.data``, and the whole model
checkpointed with ``torch.save`` and loaded under ``torch.serialization.safe_globals``).
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch  # the parity extra installs it

import tinygrad_rnn

pytestmark = pytest.mark.torch

F32 = dict(rtol=2e-4, atol=2e-5)
F64 = dict(rtol=1e-9, atol=1e-11)


@pytest.fixture(autouse=True, scope="module")
def _torch_single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: torch's pool only fights NumPy's BLAS threads
    yield
    torch.set_num_threads(n)


def _weights(model: Any, init: dict[str, np.ndarray] | None, torch_mod: Any) -> dict[str, np.ndarray]:
    """Load ``init`` (NumPy arrays) into ``model``, or record the model's own initial weights."""
    if init is not None:
        model.load_state_dict({k: torch_mod.tensor(v) for k, v in init.items()})
        return init
    return {k: np.array(v.detach().numpy() if hasattr(v, "detach") else v, copy=True)
            for k, v in model.state_dict().items()}


def _run_both(program, *args: Any, **kw: Any) -> tuple[Any, Any]:
    torch.manual_seed(0)
    ref, init = program(torch, None, *args, **kw)
    ours, _ = program(tinygrad_rnn, init, *args, **kw)
    return np.asarray(ref), np.asarray(ours)


# ------------------------------------------------------------------------------------------------
# 1. a DataLoader training loop over an embedding + 2-layer LSTM classifier (Adam, clipping)

def _classifier_data(n: int = 40, t: int = 7, vocab: int = 11, classes: int = 3):
    rng = np.random.default_rng(1)
    x = rng.integers(0, vocab, size=(n, t))
    y = (x.sum(axis=1) % classes).astype(np.int64)
    perms = [rng.permutation(n).tolist() for _ in range(3)]
    return x, y, perms


def lstm_dataloader_program(torch, init, x_np, y_np, perms):
    nn = torch.nn
    data = torch.utils.data

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(11, 6)
            self.lstm = nn.LSTM(6, 8, num_layers=2, batch_first=True)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            out, (h, c) = self.lstm(self.emb(x))
            return self.fc(out[:, -1])

    class EpochOrder(data.Sampler):  # a fixed permutation per epoch: the same batches in both runs
        def __init__(self, perms):
            self.perms, self.epoch = perms, 0

        def __iter__(self):
            p = self.perms[self.epoch % len(self.perms)]
            self.epoch += 1
            return iter(p)

        def __len__(self):
            return len(self.perms[0])

    model = Net()
    init = _weights(model, init, torch)
    model.lstm.flatten_parameters()
    ds = data.TensorDataset(torch.tensor(x_np), torch.tensor(y_np))
    loader = data.DataLoader(ds, batch_size=8, sampler=EpochOrder(perms), drop_last=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for _ in range(3):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            losses.append(criterion(model(torch.tensor(x_np)), torch.tensor(y_np)).item())
    assert len(loader) == 5
    return losses, init


def test_dataloader_lstm_training_loop():
    ref, ours = _run_both(lstm_dataloader_program, *_classifier_data())
    assert ref.shape == (18,)
    np.testing.assert_allclose(ours, ref, **F32)
    assert ref[-1] < ref[2]  # it trains: the comparison is not of a flat line


# ------------------------------------------------------------------------------------------------
# 2. packed variable-length batches through a bidirectional GRU, masked regression, SGD

def _packed_data():
    rng = np.random.default_rng(2)
    lengths = [5, 2, 7, 3, 6, 1]
    seqs = [rng.standard_normal((n, 3)).astype(np.float32) for n in lengths]
    targets = [np.cumsum(s[:, :1], axis=0).astype(np.float32) for s in seqs]
    return seqs, targets


def packed_gru_program(torch, init, seqs_np, targets_np):
    nn = torch.nn
    rnn_utils = nn.utils.rnn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(3, 5, bidirectional=True, batch_first=True)
            self.out = nn.Linear(10, 1)

        def forward(self, seqs):
            lengths = [len(s) for s in seqs]
            padded = rnn_utils.pad_sequence(seqs, batch_first=True)
            packed = rnn_utils.pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
            out, h_n = self.gru(packed)
            out, out_lengths = rnn_utils.pad_packed_sequence(out, batch_first=True, padding_value=0.0)
            assert out_lengths.tolist() == lengths
            return self.out(out), h_n

    model = Tagger()
    init = _weights(model, init, torch)
    seqs = [torch.tensor(s) for s in seqs_np]
    target = rnn_utils.pad_sequence([torch.tensor(t) for t in targets_np], batch_first=True)
    mask = rnn_utils.pad_sequence([torch.ones(len(t), 1) for t in targets_np], batch_first=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.MSELoss(reduction="sum")
    losses = []
    for _ in range(8):
        opt.zero_grad()
        pred, h_n = model(seqs)
        loss = criterion(pred * mask, target) / mask.sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        losses.append(h_n.sum().item())
    # pack_sequence of already-sorted sequences, and back
    srt = sorted(seqs, key=len, reverse=True)
    packed = rnn_utils.pack_sequence(srt)
    losses.extend(packed.batch_sizes.tolist())
    losses.append(rnn_utils.pad_packed_sequence(packed, total_length=9)[0].sum().item())
    return losses, init


def test_packed_sequences_gru():
    ref, ours = _run_both(packed_gru_program, *_packed_data())
    np.testing.assert_allclose(ours, ref, **F32)
    assert ref[14] < ref[0]


# ------------------------------------------------------------------------------------------------
# 3. an LSTMCell loop (teacher forcing, then free-running prediction), Adam

def _sine_data(dtype=np.float32, n: int = 6, t: int = 20):
    rng = np.random.default_rng(3)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    return np.sin(np.arange(t + 1)[None, :] * 0.3 + phase).astype(dtype)


def lstmcell_program(torch, init, wave, dtype_name, optimizer="adam", steps=6, line_search_fn=None):
    nn = torch.nn
    dtype = getattr(torch, dtype_name)

    class Sequence(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm1 = nn.LSTMCell(1, 12, dtype=dtype)
            self.lstm2 = nn.LSTMCell(12, 12, dtype=dtype)
            self.linear = nn.Linear(12, 1, dtype=dtype)

        def forward(self, x, future=0):
            outputs = []
            h_t = torch.zeros(x.size(0), 12, dtype=dtype)
            c_t = torch.zeros(x.size(0), 12, dtype=dtype)
            h_t2 = torch.zeros(x.size(0), 12, dtype=dtype)
            c_t2 = torch.zeros(x.size(0), 12, dtype=dtype)
            for i in range(x.size(1)):
                h_t, c_t = self.lstm1(x[:, i:i + 1], (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs.append(output)
            for _ in range(future):
                h_t, c_t = self.lstm1(output, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs.append(output)
            return torch.cat(outputs, dim=1)

    seq = Sequence()
    init = _weights(seq, init, torch)
    inp, target = torch.tensor(wave[:, :-1]), torch.tensor(wave[:, 1:])
    criterion = nn.MSELoss()
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(seq.parameters(), lr=0.8, max_iter=5, line_search_fn=line_search_fn)
    else:
        opt = torch.optim.Adam(seq.parameters(), lr=0.02)
    losses = []
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = criterion(seq(inp), target)
            losses.append(loss.item())
            loss.backward()
            return loss
        if optimizer == "lbfgs":
            opt.step(closure)
        else:
            closure()
            opt.step()
    with torch.no_grad():
        pred = seq(inp[:2], future=5)
        losses.append(criterion(pred[:, :-5], target[:2]).item())
        losses.extend(pred[:, -5:].reshape(-1).tolist())
    return losses, init


def test_lstmcell_loop_float32():
    ref, ours = _run_both(lstmcell_program, _sine_data(), "float32")
    np.testing.assert_allclose(ours, ref, **F32)
    assert ref[5] < ref[0]


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_lstmcell_float64(line_search_fn):
    """The classic time-sequence-prediction program: float64 LSTMCells trained by L-BFGS."""
    ref, ours = _run_both(lstmcell_program, _sine_data(np.float64), "float64", optimizer="lbfgs", steps=3,
                          line_search_fn=line_search_fn)
    assert len(ref) == len(ours) and len(ref) > 10  # the same number of closure evaluations
    np.testing.assert_allclose(ours, ref, **F64)
    assert min(ref[:-11]) < 0.85 * ref[0]  # it descends (lr 0.8 without line search also overshoots once)


# ------------------------------------------------------------------------------------------------
# 4. ReduceLROnPlateau driving SGD on a GRU regressor by its validation loss

def plateau_program(torch, init, x_np, y_np):
    nn = torch.nn

    class Reg(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(2, 4)
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            _, h = self.rnn(x)
            return self.head(h[-1])

    model = Reg()
    init = _weights(model, init, torch)
    x, y = torch.tensor(x_np), torch.tensor(y_np)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1, threshold=0.3,
                                                       cooldown=1, min_lr=0.01)
    crit = nn.MSELoss()
    out = []
    for _ in range(12):
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        with torch.no_grad():
            val = crit(model(x), y).item()
        sched.step(val)
        out += [loss.item(), val, sched.get_last_lr()[0], sched.num_bad_epochs, sched.best]
    return out, init


def test_reduce_lr_on_plateau_program():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 8, 2)).astype(np.float32)
    y = x.sum(axis=(0, 2))[:, None].astype(np.float32) * 0.1
    ref, ours = _run_both(plateau_program, x, y)
    np.testing.assert_allclose(ours, ref, **F32)
    lrs = ref[2::5]
    assert lrs[-1] < lrs[0]  # the schedule did reduce (the comparison covers a reduction)


# ------------------------------------------------------------------------------------------------
# 5. a word-level LSTM language model, as pytorch/examples' word_language_model: init_hidden with
#    new_zeros, manual SGD through p.data.add_(p.grad, alpha=-lr), narrow/view/contiguous batching,
#    NLLLoss, flatten_parameters, a state_dict checkpoint to the file ``ckpt`` and back, or (``ckpt`` None)
#    the whole module through torch.save and loaded under torch.serialization.safe_globals

def word_lm_program(torch, init, corpus_ids, ckpt, steps=6):
    nn = torch.nn
    device = torch.device("cpu")

    class RNNModel(nn.Module):
        def __init__(self, ntoken, ninp, nhid, nlayers):
            super().__init__()
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = nn.LSTM(ninp, nhid, nlayers)
            self.decoder = nn.Linear(nhid, ntoken)
            self.nhid, self.nlayers = nhid, nlayers

        def forward(self, input, hidden):
            emb = self.encoder(input)
            output, hidden = self.rnn(emb, hidden)
            decoded = self.decoder(output).view(-1, self.decoder.out_features)
            return nn.functional.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))

    def batchify(data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        return data.view(bsz, -1).t().contiguous().to(device)

    def get_batch(source, i, bptt=5):
        seq_len = min(bptt, len(source) - 1 - i)
        return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)

    def repackage_hidden(h):
        return h.detach() if isinstance(h, torch.Tensor) else tuple(repackage_hidden(v) for v in h)

    model = RNNModel(20, 8, 12, 2).to(device)
    init = _weights(model, init, torch)
    train = batchify(torch.tensor(corpus_ids, dtype=torch.long), 4)
    criterion = nn.NLLLoss()
    lr, losses = 2.0, []
    hidden = model.init_hidden(4)
    model.rnn.flatten_parameters()
    for i in range(0, min(train.size(0) - 1, steps * 5), 5):
        data, targets = get_batch(train, i)
        model.zero_grad()
        hidden = repackage_hidden(hidden)
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        losses.append(loss.item())
    if ckpt is not None:
        torch.save(model.state_dict(), ckpt)
        model = RNNModel(20, 8, 12, 2)
        model.load_state_dict(torch.load(ckpt))
    else:
        # torch.save pickles the class by name: give it a module-level name, one per torch-like module
        RNNModel.__qualname__ = RNNModel.__name__ = f"RNNModel_{torch.__name__}"
        globals()[RNNModel.__name__] = RNNModel
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        with torch.serialization.safe_globals([RNNModel, torch.nn.modules.rnn.LSTM, torch.nn.modules.sparse.Embedding,
                                               torch.nn.modules.linear.Linear, torch.nn.modules.dropout.Dropout]):
            model = torch.load(buf)
    model.rnn.flatten_parameters()
    model.eval()
    with torch.no_grad():
        output, _ = model(train[:5], model.init_hidden(4))
        losses.append(criterion(output, train[1:6].reshape(-1)).item())
    return losses, init


def test_word_lm_manual_sgd_through_data(tmp_path):
    ids = np.random.default_rng(0).integers(0, 20, size=200)
    torch.manual_seed(0)
    ref, init = word_lm_program(torch, None, ids, str(tmp_path / "torch.pt"))
    ours, _ = word_lm_program(tinygrad_rnn, init, ids, str(tmp_path / "ours.pt"))
    assert len(ref) == len(ours) == 7  # six training steps and the reloaded model's evaluation
    np.testing.assert_allclose(ours, ref, **F32)


# ------------------------------------------------------------------------------------------------
# 6. text generation: multinomial sampling, topk, fill_, a top-level exp/log, no_grad. The sampled
#    word is made deterministic (all weight on the top-1 word, found by topk) so both runs can agree.

def generate_program(torch, init, n_words=12):
    nn = torch.nn
    rnn, decoder, emb = nn.LSTM(6, 6), nn.Linear(6, 9), nn.Embedding(9, 6)
    holder = nn.ModuleList([rnn, decoder, emb])
    init = _weights(holder, init, torch)
    hidden = (torch.zeros(1, 1, 6), torch.zeros(1, 1, 6))
    input = torch.zeros(1, 1, dtype=torch.long)
    words, probs = [], []
    with torch.no_grad():
        for _ in range(n_words):
            output, hidden = rnn(emb(input), hidden)
            word_weights = decoder(output).squeeze().div(0.8).exp()
            probs.append(torch.exp(torch.log(word_weights)).sum().item())
            top = torch.topk(word_weights, 3)
            probs.extend(top.values.tolist())
            only_top = torch.zeros_like(word_weights)
            only_top[top.indices[0]] = 1.0
            word_idx = torch.multinomial(word_weights * only_top, 1)[0]
            input.fill_(word_idx)
            words.append(int(word_idx))
    return words + probs, init


def test_generate_with_multinomial_and_topk():
    ref, ours = _run_both(generate_program)
    np.testing.assert_allclose(ours, ref, **F32)


# ------------------------------------------------------------------------------------------------
# 7. pytorch/examples' time_sequence_prediction as written there: from_numpy, .double(), torch.double,
#    input.split(1, dim=1), LSTMCells trained by L-BFGS

def time_sequence_program(torch, init, wave):
    nn = torch.nn

    class Sequence(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm1 = nn.LSTMCell(1, 10)
            self.lstm2 = nn.LSTMCell(10, 10)
            self.linear = nn.Linear(10, 1)

        def forward(self, input, future=0):
            outputs = []
            h_t = torch.zeros(input.size(0), 10, dtype=torch.double)
            c_t = torch.zeros(input.size(0), 10, dtype=torch.double)
            h_t2 = torch.zeros(input.size(0), 10, dtype=torch.double)
            c_t2 = torch.zeros(input.size(0), 10, dtype=torch.double)
            for input_t in input.split(1, dim=1):
                h_t, c_t = self.lstm1(input_t, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            for _ in range(future):
                h_t, c_t = self.lstm1(output, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            return torch.cat(outputs, dim=1)

    inp = torch.from_numpy(wave[3:, :-1])
    target = torch.from_numpy(wave[3:, 1:])
    seq = Sequence()
    seq.double()
    if init is None:
        init = {k: v.detach().numpy().copy() for k, v in seq.state_dict().items()}
    else:
        seq.load_state_dict({k: torch.from_numpy(v) for k, v in init.items()})
    criterion = nn.MSELoss()
    optimizer = torch.optim.LBFGS(seq.parameters(), lr=0.8)
    losses = []
    for _ in range(2):
        def closure():
            optimizer.zero_grad()
            loss = criterion(seq(inp), target)
            losses.append(loss.item())
            loss.backward()
            return loss
        optimizer.step(closure)
    with torch.no_grad():
        pred = seq(inp[:1], future=4)
        losses.extend(pred.detach().numpy()[0, -4:].tolist())
    return losses, init


def test_time_sequence_prediction_as_written():
    wave = np.sin(np.arange(30)[None, :] * 0.2 + np.arange(6)[:, None]).astype(np.float64)
    ref, ours = _run_both(time_sequence_program, wave)
    assert len(ref) == len(ours) > 10
    np.testing.assert_allclose(ours, ref, **F64)
    assert min(ref[:-4]) < ref[0]


def test_word_lm_whole_module_checkpoint_as_written():
    """pytorch/examples' form: the whole model saved with torch.save, loaded under safe_globals."""
    ids = np.random.default_rng(0).integers(0, 20, size=200)
    torch.manual_seed(0)
    ref, init = word_lm_program(torch, None, ids, None)
    ours, _ = word_lm_program(tinygrad_rnn, init, ids, None)
    assert len(ref) == len(ours) == 7
    np.testing.assert_allclose(ours, ref, **F32)


# every API those programs needed that was missing when issue 20 was filed, probed one by one against both
PROBES = {
    "torch.device('cpu')": lambda t: t.device("cpu"),
    "torch.double / float / long / int / half": lambda t: (t.double, t.float, t.long, t.int, t.half),
    "torch.from_numpy (shares memory)": lambda t: t.from_numpy(np.zeros(2)),
    "Tensor.new_zeros / new_ones / new_full / new_empty": lambda t: (t.zeros(1).new_zeros(2, 3), t.zeros(1).new_ones(2),
                                                                      t.zeros(1).new_full((2,), 3.0), t.zeros(1).new_empty(2)),
    "Tensor.view": lambda t: t.zeros(4).view(2, 2),
    "Tensor.t": lambda t: t.zeros(2, 3).t(),
    "Tensor.contiguous": lambda t: t.zeros(2, 3).contiguous(),
    "Tensor.narrow": lambda t: t.zeros(5).narrow(0, 1, 2),
    "Tensor.type(dtype)": lambda t: t.zeros(2).type(t.float64),
    "Tensor.split (method)": lambda t: t.zeros(2, 4).split(1, dim=1),
    "Tensor.div (method)": lambda t: t.ones(2).div(2.0),
    "Tensor.fill_ from a 0-d tensor": lambda t: t.zeros(1, 1, dtype=t.int64).fill_(t.tensor(3)),
    "p.data as a Tensor; add_(other, alpha=)": lambda t: t.zeros(2).data.add_(t.ones(2), alpha=-0.5),
    "torch.exp / torch.log / torch.tanh (top level)": lambda t: (t.exp(t.zeros(1)), t.log(t.ones(1)), t.tanh(t.zeros(1))),
    "torch.multinomial": lambda t: t.multinomial(t.ones(3), 1),
    "torch.topk": lambda t: t.topk(t.tensor([1.0, 3.0, 2.0]), 2),
    "torch.randint(high, size, dtype=)": lambda t: t.randint(9, (1, 1), dtype=t.int64),
    "torch.save / torch.load with a file object": lambda t: _save_load_file(t),
    "torch.save of a whole module + torch.serialization.safe_globals": lambda t: _save_module(t),
    "torch.nn.modules.rnn.LSTM / sparse.Embedding / linear.Linear paths": lambda t: (
        t.nn.modules.rnn.LSTM, t.nn.modules.sparse.Embedding, t.nn.modules.linear.Linear),
    "Module.register_buffer": lambda t: t.nn.Module().register_buffer("b", t.zeros(1)),
    "Module.apply": lambda t: t.nn.Linear(2, 2).apply(lambda m: None),
}


def _save_load_file(t):
    buf = io.BytesIO()
    t.save({"w": t.zeros(2)}, buf)
    buf.seek(0)
    return t.load(buf)


def _save_module(t):
    buf = io.BytesIO()
    t.save(t.nn.Linear(2, 2), buf)
    buf.seek(0)
    with t.serialization.safe_globals([t.nn.Linear]):
        return t.load(buf)


@pytest.mark.parametrize("name", list(PROBES))
def test_api_probe(name):
    PROBES[name](torch)  # the probe is right: torch passes it
    PROBES[name](tinygrad_rnn)


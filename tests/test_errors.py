"""Every user mistake gets the right exception type and a message that names what was wrong."""
import importlib.util
import re

import numpy as np
import pytest

import tinygrad_rnn as tr
import tinygrad_rnn.nn.functional as F


def test_matmul_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=re.escape("(3x4 and 5x2)")):
        tr.randn(3, 4) @ tr.randn(5, 2)
    with pytest.raises(ValueError, match=re.escape("2x3x4 and 5")):
        tr.randn(2, 3, 4) @ tr.randn(5)
    with pytest.raises(ValueError, match="batch dimensions"):
        tr.randn(2, 3, 4) @ tr.randn(3, 4, 5)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        tr.tensor(2.0) @ tr.randn(3)
    with pytest.raises(TypeError, match="float"):
        tr.tensor([[1, 2]]) @ tr.tensor([[1], [2]])


@pytest.mark.parametrize("op", ["__add__", "__sub__", "__mul__", "__truediv__", "__pow__"])
def test_non_broadcastable_operands_name_both_shapes(op):
    with pytest.raises(ValueError, match=re.escape("(2, 3)") + ".*" + re.escape("(4,)")):
        getattr(tr.ones(2, 3), op)(tr.ones(4))


def test_where_non_broadcastable_and_non_bool_condition():
    with pytest.raises(ValueError, match="cannot be broadcast"):
        tr.where(np.ones((2, 3), bool), tr.ones(2, 3), tr.ones(4))
    with pytest.raises(TypeError, match="bool"):
        tr.where(np.ones((2, 3)), tr.ones(2, 3), 0.0)
    with pytest.raises(TypeError, match="Tensor"):
        tr.where(np.ones(2, bool), 1.0, 2.0)


def test_requires_grad_on_int_tensor():
    with pytest.raises(TypeError, match="int64"):
        tr.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError):
        tr.zeros(3, dtype=tr.int64, requires_grad=True)
    with pytest.raises(TypeError):
        tr.arange(3).requires_grad_()
    with pytest.raises(ValueError, match="detach"):
        (tr.ones(2, requires_grad=True) * 2).requires_grad_(False)


def test_backward_on_non_scalar_without_gradient_names_shape():
    y = tr.ones(2, 3, requires_grad=True) * 2
    with pytest.raises(ValueError, match=re.escape("(2, 3)")):
        y.backward()


def test_backward_gradient_shape_mismatch():
    y = tr.ones(2, 3, requires_grad=True) * 2
    with pytest.raises(ValueError, match=re.escape("(3, 2)") + ".*" + re.escape("(2, 3)")):
        y.backward(gradient=np.ones((3, 2)))


def test_cat_and_stack_mismatches():
    with pytest.raises(ValueError, match=re.escape("(2, 3)") + ".*" + re.escape("(2, 4)")):
        tr.cat([tr.ones(2, 3), tr.ones(2, 4)], dim=0)
    with pytest.raises(ValueError):
        tr.cat([tr.ones(2, 3), tr.ones(3)], dim=0)
    with pytest.raises(ValueError, match=re.escape("(2, 3)") + ".*" + re.escape("(3, 2)")):
        tr.stack([tr.ones(2, 3), tr.ones(3, 2)])
    with pytest.raises(ValueError, match="non-empty"):
        tr.cat([])
    with pytest.raises(TypeError, match="dtype"):
        tr.cat([tr.ones(2), tr.ones(2, dtype=tr.float64)])
    with pytest.raises(TypeError, match="tensors"):
        tr.stack([tr.ones(2), np.ones(2)])


@pytest.mark.parametrize("call", [
    lambda t: t.sum(dim=3),
    lambda t: t.mean(axis=-4),
    lambda t: t.max(dim=5),
    lambda t: t.softmax(dim=3),
    lambda t: t.log_softmax(dim=-4),
    lambda t: t.transpose(0, 3),
    lambda t: t.permute(0, 1, 5),
    lambda t: t.permute(0, 1),
    lambda t: t.unsqueeze(5),
    lambda t: t.squeeze(3),
    lambda t: t.flatten(0, 7),
    lambda t: t.argmax(dim=4),
    lambda t: tr.cat([t, t], dim=3),
    lambda t: tr.stack([t, t], dim=5),
    lambda t: t.split(1, dim=3),
    lambda t: t.sum(dim=(0, 0)),
])
def test_out_of_range_or_repeated_dims(call):
    with pytest.raises(ValueError, match="dim"):
        call(tr.ones(2, 3, 4))


def test_bad_dim_types_and_spellings():
    t = tr.ones(2, 3)
    with pytest.raises(TypeError):
        t.sum(dim=1.5)
    with pytest.raises(ValueError, match="not both"):
        t.sum(dim=0, axis=0)
    with pytest.raises(ValueError, match="not both"):
        t.sum(0, keepdim=True, keepdims=True)


def test_split_and_expand_and_reshape_errors():
    t = tr.ones(6, 2)
    with pytest.raises(ValueError, match="add up"):
        t.split([2, 2], dim=0)
    with pytest.raises(ValueError, match="positive"):
        t.split(0)
    with pytest.raises(ValueError, match=re.escape("(6, 2)")):
        t.expand(6, 3)
    with pytest.raises(ValueError, match=re.escape("(6, 2)") + ".*" + re.escape("(5, 2)")):
        t.reshape(5, 2)
    with pytest.raises(ValueError):
        t.reshape(-1, -1)
    with pytest.raises(ValueError):
        t.view(5, -1)


def test_indexing_errors():
    t = tr.ones(3, 4)
    with pytest.raises(IndexError, match=re.escape("(3, 4)")):
        t[3]
    with pytest.raises(IndexError):
        t[[0, 5]]
    with pytest.raises(IndexError):
        t[0, 0, 0]
    with pytest.raises(TypeError, match="float"):
        t[1.0]
    with pytest.raises(TypeError, match="integer or bool"):
        t[tr.tensor([0.0, 1.0])]
    with pytest.raises(TypeError, match="integer or bool"):
        t[np.array([0.5])]


def test_cross_entropy_target_errors():
    logits = tr.randn(4, 3)
    with pytest.raises(ValueError, match="target 3 is out of range for 3 classes"):
        F.cross_entropy(logits, [0, 1, 3, 2])
    with pytest.raises(ValueError, match="-1"):
        F.cross_entropy(logits, [0, -1, 1, 2])
    with pytest.raises(TypeError, match="integer"):
        F.cross_entropy(logits, [0.0, 1.0, 2.0, 1.0])
    with pytest.raises(TypeError, match="integer"):
        F.cross_entropy(logits, tr.tensor([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=re.escape("(4,)") + ".*" + re.escape("(3,)")):
        F.cross_entropy(logits, [0, 1, 2])
    with pytest.raises(ValueError, match=re.escape("(4, 2)")):
        F.cross_entropy(tr.randn(4, 3, 2), [0, 1, 2, 0])
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, [0, 1, 2, 0], reduction="avg")
    with pytest.raises(TypeError, match="float"):
        F.cross_entropy(tr.tensor([[1, 2]]), [0])


def test_nll_loss_errors():
    with pytest.raises(ValueError, match="out of range"):
        F.nll_loss(tr.randn(2, 3), [0, 3])
    with pytest.raises(TypeError, match="integer"):
        F.nll_loss(tr.randn(2, 3), [0.5, 1.0])
    with pytest.raises(ValueError, match="reduction"):
        F.nll_loss(tr.randn(2, 3), [0, 1], reduction="max")


def test_embedding_errors():
    w = tr.randn(5, 2)
    with pytest.raises(ValueError, match="id 5 is out of range for 5 embeddings"):
        F.embedding([0, 5], w)
    with pytest.raises(ValueError, match="id -1"):
        F.embedding([-1, 0], w)
    with pytest.raises(TypeError, match="integers"):
        F.embedding([0.0, 1.0], w)
    with pytest.raises(ValueError, match="2-D"):
        F.embedding([0], tr.randn(5))


def test_mse_loss_and_linear_shape_mismatch():
    with pytest.raises(ValueError, match=re.escape("(2, 3)") + ".*" + re.escape("(3, 2)")):
        F.mse_loss(tr.ones(2, 3), tr.ones(3, 2))
    with pytest.raises(ValueError, match=re.escape("(3,)")):
        F.mse_loss(tr.ones(2, 3), tr.ones(3))  # no silent broadcast
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(tr.ones(2), tr.ones(2), reduction="median")
    with pytest.raises(ValueError, match="features"):
        F.linear(tr.ones(2, 3), tr.ones(4, 5))


def test_dropout_bad_p():
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="p must be in"):
            F.dropout(tr.ones(3), p)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:1", "cpu:0", ""])
def test_unknown_device_string(device):
    with pytest.raises(ValueError, match="device|GPU"):
        tr.tensor([1.0], device=device)
    with pytest.raises(ValueError):
        tr.zeros(2, device=device)


def test_device_of_wrong_type():
    with pytest.raises(TypeError, match="device"):
        tr.zeros(2, device=0)


def test_to_cuda_without_gpu_says_how_to_install():
    if tr.cuda.is_available():
        pytest.skip("a CUDA GPU is usable here")
    with pytest.raises(tr.DeviceUnavailableError) as info:
        tr.ones(2).to("cuda")
    assert isinstance(info.value, RuntimeError)
    msg = str(info.value)
    assert "cuda" in msg and "not available" in msg
    if importlib.util.find_spec("cupy") is None:
        assert "pip install 'tinygrad_rnn[cuda]'" in msg
    with pytest.raises(tr.DeviceUnavailableError):
        tr.zeros(2, device="cuda")
    assert isinstance(tr.cuda.unavailable_reason(), str)


def test_dtype_and_value_errors():
    with pytest.raises(TypeError, match="float16|unsupported"):
        tr.tensor(np.ones(2, dtype=np.float16))
    with pytest.raises(TypeError, match="dtype"):
        tr.zeros(2, dtype="complex64")
    with pytest.raises(TypeError):
        tr.tensor(["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        tr.zeros(-1, 2)
    with pytest.raises(ValueError, match="not both"):
        tr.randn(2, seed=1, generator=tr.Generator(1))
    with pytest.raises(TypeError, match="Generator"):
        tr.randn(2, generator=np.random.default_rng(0))
    with pytest.raises(TypeError, match="exp"):
        tr.tensor([1, 2]).exp()
    with pytest.raises(TypeError, match="unsupported operand"):
        tr.ones(2) + "x"


def test_scalar_conversion_errors():
    t = tr.ones(2)
    with pytest.raises(ValueError, match=re.escape("(2,)")):
        t.item()
    with pytest.raises(ValueError, match="ambiguous"):
        bool(t)
    with pytest.raises(TypeError, match="0-d"):
        len(tr.tensor(1.0))
    with pytest.raises(ValueError, match="copy_"):
        t.copy_(np.ones(3))

"""Activation checkpointing changes memory and time, never the gradients (tiny config, float32, CPU)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from flashi2v import FlashI2VTransformer
from flashi2v.errors import FlashI2VError
from flashi2v.train.objective import FlashI2VObjective
from flashi2v.train.parallel import (
    _ATTENTION_OPS,
    _MATMUL_OPS,
    CheckpointedBlock,
    apply_activation_checkpointing,
)


def make_model() -> FlashI2VTransformer:
    torch.manual_seed(0)
    model = FlashI2VTransformer.from_config("tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)  # no zero-initialised branch: every parameter gets a gradient
    return model


class CountRecomputed(TorchDispatchMode):
    """Counts the attention and matmul ops that run (during backward: that are recomputed)."""

    supports_higher_order_operators = True  # compiled backward wraps seeded ops in run_with_rng_state

    def __init__(self):
        super().__init__()
        self.attention = self.matmuls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        op = args[1] if isinstance(func, torch._ops.HigherOrderOperator) else func
        self.attention += op in _ATTENTION_OPS
        self.matmuls += op in _MATMUL_OPS
        return func(*args, **(kwargs or {}))


def loss_and_grads(model: FlashI2VTransformer, counter: CountRecomputed | None = None):
    g = torch.Generator().manual_seed(1)
    x, s, eps = (torch.randn(2, 16, 3, 8, 8, generator=g), torch.randn(2, 16, 1, 8, 8, generator=g),
                 torch.randn(2, 16, 3, 8, 8, generator=g))
    loss = FlashI2VObjective(model)(x, s, torch.randn(2, 16, 32, generator=g), torch.tensor([0.3, 0.7]), eps,
                                    torch.tensor([0.2, 0.5]))
    with counter or contextlib.nullcontext():
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same(a, b, rtol: float, atol: float) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, rtol=rtol, atol=atol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=rtol, atol=atol, msg=name)


def check_recomputation(mode: str, backend: str | None) -> None:
    """Same gradients as without checkpointing, and backward recomputes what the mode says: "full"
    attention and matmuls, "attention" the matmuls only, "selective" neither. With ``backend`` the
    blocks are compiled: this checks that the policy reaches the compiled graph."""
    from flashi2v.fast_path.compile import apply_compile

    plain = CountRecomputed()
    reference = loss_and_grads(make_model(), plain)
    model = make_model()
    apply_activation_checkpointing(model, mode)
    if backend:
        torch._dynamo.reset()
        apply_compile(model, backend=backend)
    counter = CountRecomputed()
    tol = {"rtol": 1e-6, "atol": 1e-7} if backend is None else {"rtol": 1e-5, "atol": 1e-6}
    assert_same(loss_and_grads(model, counter), reference, **tol)
    assert (counter.attention > 0) == (mode == "full")
    assert (counter.matmuls > plain.matmuls) == (mode in ("full", "attention"))


@pytest.mark.parametrize("mode", ["full", "attention", "selective"])
def test_checkpointing_modes_give_the_same_gradients_and_recompute_what_they_say(mode):
    check_recomputation(mode, None)


@pytest.mark.parametrize("mode", ["full", "attention", "selective"])
def test_compiled_checkpointing_modes_recompute_what_they_say(mode):
    check_recomputation(mode, "aot_eager")  # AOTAutograd's partitioner, as with Inductor, without codegen


def test_partial_checkpointing_wraps_a_fraction_of_the_blocks():
    reference = loss_and_grads(make_model())
    model = make_model()
    apply_activation_checkpointing(model, "full", 0.5)
    wrapped = [isinstance(b, CheckpointedBlock) for b in model.blocks]
    assert sum(wrapped) == round(0.5 * len(model.blocks)) and model.checkpoint_blocks
    assert model.state_dict().keys() == make_model().state_dict().keys()
    assert_same(loss_and_grads(model), reference, rtol=1e-6, atol=1e-7)


def test_checkpointing_can_be_switched_off_and_rejects_unknown_modes():
    model = make_model()
    apply_activation_checkpointing(model, "selective")
    apply_activation_checkpointing(model, "none")
    assert not model.checkpoint_blocks and not any(isinstance(b, CheckpointedBlock) for b in model.blocks)
    with pytest.raises(FlashI2VError, match="mode"):
        apply_activation_checkpointing(model, "some")
    with pytest.raises(FlashI2VError, match="fraction"):
        apply_activation_checkpointing(model, "full", 1.5)


def test_inductor_compiled_blocks_with_selective_checkpointing_give_the_same_gradients():
    """The training recipe's path (selective policy inside Inductor-compiled blocks): gradients equal to
    eager without checkpointing, to float32 rounding of the fused kernels."""
    from flashi2v.fast_path.compile import apply_compile

    torch._dynamo.reset()
    reference = loss_and_grads(make_model())
    model = make_model()
    apply_activation_checkpointing(model, "selective")
    apply_compile(model)
    assert_same(loss_and_grads(model), reference, rtol=1e-4, atol=1e-5)

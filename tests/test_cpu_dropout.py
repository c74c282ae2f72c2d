"""adaptkit.fast_cpu_dropout: the same Bernoulli masks as torch's CPU kernel, drawn in bulk, only
inside the block (test_cpu_kernels_in_train: train enters it)."""

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

import adaptkit.cpu_speed
from adaptkit.cpu_speed import dropout as cpu_dropout


def seeded_mask(numel: int = 4096, p: float = 0.5, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.empty(numel).bernoulli_(p)


def assert_frequency(values: torch.Tensor, p: float) -> None:
    """Only 0s and 1s, with a share of 1s within 6 standard errors of ``p``, in the even and the
    odd positions alike (each comes from one half of a 64-bit word)."""
    assert set(values.unique().tolist()) <= {0, 1}
    for half in (values.flatten()[0::2], values.flatten()[1::2]):
        tolerance = 6 * math.sqrt(p * (1 - p) / half.numel()) + 1e-12
        assert abs(half.double().mean().item() - p) <= tolerance, (half.double().mean().item(), p)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_masks_have_the_bernoulli_frequency(p):
    with adaptkit.cpu_speed.fast_cpu_dropout():
        assert_frequency(torch.empty(400_000).bernoulli_(p), p)


def test_dropout_drops_p_and_keeps_the_expectation():
    with adaptkit.cpu_speed.fast_cpu_dropout():
        out = F.dropout(torch.ones(400_000), p=0.1, training=True)
    assert_frequency((out == 0).float(), 0.1)
    assert torch.allclose(out[out != 0], torch.tensor(1 / 0.9))


def test_a_mask_of_32_million_elements_is_random_to_the_end():
    count = (1 << 25) + 3  # BERT-large's attention probabilities for 32 x 16 heads x 256^2 tokens, and 3
    with adaptkit.cpu_speed.fast_cpu_dropout():
        mask = torch.empty(count, dtype=torch.bool).bernoulli_(0.3)
    assert_frequency(mask[-(1 << 20):], 0.3)
    assert_frequency(mask[: 1 << 20], 0.3)


def test_chunks_draw_the_masks_of_one_go(monkeypatch):
    """Drawn a chunk at a time (bounded memory), a mask is the one drawn in one go, odd sizes too."""
    masks = []
    for chunk in (2, 1 << 30):
        monkeypatch.setattr(cpu_dropout, "_CHUNK", chunk)
        torch.manual_seed(1)
        masks.append(cpu_dropout._bernoulli_(torch.empty(3, 7), 0.4))
    assert torch.equal(*masks)


def test_the_attention_dropout_inside_sdpa_draws_from_it():
    """The attention's own dropout (inside scaled_dot_product_attention on the CPU) uses the block's
    masks: the result equals attention computed by hand with a mask from the same seed."""
    q, k, v = torch.randn(3, 2, 4, 16, 8).unbind(0)
    torch.manual_seed(5)
    with adaptkit.cpu_speed.fast_cpu_dropout():
        fused = F.scaled_dot_product_attention(q, k, v, dropout_p=0.25)
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    torch.manual_seed(5)
    keep = cpu_dropout._bernoulli_(torch.empty_like(probs), 0.75)
    assert torch.allclose(fused, (probs * keep / 0.75) @ v, atol=1e-6)
    torch.manual_seed(5)
    assert not torch.allclose(fused, F.scaled_dot_product_attention(q, k, v, dropout_p=0.25))


def test_seeded_runs_repeat_and_a_given_generator_is_used():
    with adaptkit.cpu_speed.fast_cpu_dropout():
        assert torch.equal(seeded_mask(seed=3), seeded_mask(seed=3))
        assert not torch.equal(seeded_mask(seed=3), seeded_mask(seed=4))
        torch.manual_seed(0)
        state = torch.get_rng_state()
        first = torch.empty(1000).bernoulli_(0.5, generator=torch.Generator().manual_seed(7))
        second = torch.empty(1000).bernoulli_(0.5, generator=torch.Generator().manual_seed(7))
        assert torch.equal(first, second)
        assert torch.equal(torch.get_rng_state(), state)  # the default generator was not drawn from


def test_nested_blocks_and_an_error_restore_torchs_kernel():
    reference = seeded_mask()
    with pytest.raises(KeyError):
        with adaptkit.cpu_speed.fast_cpu_dropout():
            fast = seeded_mask()
            assert not torch.equal(fast, reference)
            with adaptkit.cpu_speed.fast_cpu_dropout():
                assert torch.equal(seeded_mask(), fast)
            assert torch.equal(seeded_mask(), fast)  # the inner exit removed only its own
            raise KeyError("stop")
    assert torch.equal(seeded_mask(), reference)


def test_p_outside_0_1_is_refused_as_torch_refuses_it():
    for context in (contextlib.nullcontext(), adaptkit.cpu_speed.fast_cpu_dropout()):
        with context, pytest.raises(RuntimeError, match=r"p to be in \[0, 1\]"):
            torch.empty(4).bernoulli_(1.5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64, torch.bool, torch.int8,
                                   torch.uint8, torch.int64])
def test_dtypes_shapes_and_views_are_kept(dtype):
    with adaptkit.cpu_speed.fast_cpu_dropout():
        base = torch.full((256, 64), 5, dtype=dtype)
        view = base.t()  # not contiguous: written through to base
        assert view.bernoulli_(0.5) is view
        assert (base.dtype, base.shape) == (dtype, (256, 64))
        assert_frequency(base.float(), 0.5)
        assert torch.empty(0, 3, dtype=dtype).bernoulli_(0.5).shape == (0, 3)
        assert torch.tensor(2, dtype=dtype).bernoulli_(1.0).item() == 1
        assert torch.tensor(2, dtype=dtype).bernoulli_(0.5).item() in (0, 1)


def test_what_torch_refuses_is_refused_before_drawing():
    with adaptkit.cpu_speed.fast_cpu_dropout():
        state = torch.get_rng_state()
        for p in (0.5, 1.0):
            with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
                torch.zeros(1).expand(4).bernoulli_(p)
        with pytest.raises(NotImplementedError, match="not implemented for"):
            torch.zeros(3, dtype=torch.complex64).bernoulli_(0.5)
        assert torch.equal(torch.get_rng_state(), state)

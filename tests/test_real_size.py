"""bert-base at its published size (random weights): the sizes where float32 index maths breaks."""

import contextlib

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import adaptkit.cpu_speed
import adaptkit.state
from adaptkit.checkpoint import fingerprint_positions
from adaptkit.layer import BottleneckAdapter
from tiny_models import logits


def test_fingerprint_positions_are_exact_above_2_pow_24():
    numel = 30522 * 768  # bert-base's word embeddings: float32 linspace rounds n-1 up to n here
    assert torch.linspace(0, numel - 1, 8)[-1].long().item() == numel, "float32 still rounds past the end"
    positions = fingerprint_positions(numel, 8)
    assert positions[0] == 0 and positions[-1] == numel - 1
    assert positions == sorted(positions) and len(set(positions)) == 8


def bert_base(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(num_labels=2)).eval()


@pytest.mark.slow
def test_bert_base_saves_and_reloads_onto_a_fresh_copy(tmp_path):
    model = bert_base(seed=0)
    assert model.bert.embeddings.word_embeddings.weight.numel() > 2 ** 24
    inputs = {"input_ids": torch.randint(1000, 30000, (2, 16), generator=torch.Generator().manual_seed(0))}
    base = logits(model, inputs)
    sites = adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(64), name="task")
    assert len(sites) == 24
    report = adaptkit.count_parameters(model)
    assert report.trainable["adapters"] == 24 * (2 * 64 * 768 + 64 + 768)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.01)
    adapted = logits(model, inputs)
    assert not torch.equal(adapted, base)
    adaptkit.save_adapter(model, tmp_path / "task")

    fresh = bert_base(seed=0)
    adaptkit.load_adapter(fresh, tmp_path / "task")
    assert torch.equal(logits(fresh, inputs), adapted)
    with adaptkit.adapters_disabled(fresh):
        assert torch.equal(logits(fresh, inputs), base)
    with pytest.raises(adaptkit.BaseModelMismatchError, match="other pretrained weights"):
        adaptkit.load_adapter(bert_base(seed=1), tmp_path / "task")


@pytest.mark.slow
def test_fusion_of_three_adapters_on_bert_base_in_bf16(tmp_path):
    """bert-base's published config in bf16, AdapterHub's SeqBn adapters fused: one training step
    moves only the fusion's float32 tensors, and the fusion saves and reloads exactly."""
    model = bert_base(seed=0).to(torch.bfloat16)
    inputs = {"input_ids": torch.randint(1000, 30000, (2, 16), generator=torch.Generator().manual_seed(0))}
    names = ("sst2", "mrpc", "rte")
    for name in names:
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.seq_bn(), name=name)
    block = adaptkit.add_fusion(model, adaptkit.Fuse(*names))
    fusion = adaptkit.state.get_state(model).fusions[block.name]
    assert len(fusion.site_modules) == 12 and all(p.dtype == torch.float32 for p in fusion.parameters())
    trained = {id(p) for p in fusion.parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == trained
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = model(**inputs, labels=torch.tensor([0, 1])).loss + adaptkit.fusion_regularization_loss(model)
    loss.backward()
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4).step()
    model.eval()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n, p in model.named_parameters() if id(p) in trained}
    assert any(".fusions." in n for n in moved)
    adapted = logits(model, inputs)
    for name in names:
        adaptkit.save_adapter(model, tmp_path / name, name)
    adaptkit.save_fusion(model, tmp_path / "fusion", block)

    fresh = bert_base(seed=0).to(torch.bfloat16)
    for name in names:
        adaptkit.load_adapter(fresh, tmp_path / name)
    adaptkit.load_fusion(fresh, tmp_path / "fusion")
    assert torch.equal(logits(fresh, inputs), adapted)


@pytest.mark.slow
def test_fast_cpu_attention_above_2_pow_24_scores():
    """roberta-large's attention (16 heads of 64) over 512 tokens, batch 8: 33.5M scores. The output
    and the gradients equal torch's math attention with the same dropout mask."""
    from adaptkit.cpu_speed.attention import DropoutAttention
    shape, p, scale = (8, 16, 512, 64), 0.1, 64 ** -0.5
    generator = torch.Generator().manual_seed(0)
    ours = [torch.randn(shape, generator=generator).requires_grad_() for _ in range(3)]
    theirs = [x.detach().clone().requires_grad_() for x in ours]
    torch.manual_seed(1)
    out = DropoutAttention.apply(*ours, None, None, scale, p)
    assert out.shape == shape and shape[0] * shape[1] * shape[2] ** 2 > 2 ** 24
    torch.manual_seed(1)
    keep = torch.empty(*shape[:3], shape[2]).bernoulli_(1 - p).bool()
    expected, _ = torch.ops.aten._scaled_dot_product_attention_math(*theirs, None, p, False, keep, scale=scale)
    grad = torch.randn(shape, generator=generator)
    out.backward(grad)
    expected.backward(grad)
    assert torch.allclose(out, expected, atol=1e-5)
    for mine, reference in zip(ours, theirs):
        assert torch.allclose(mine.grad, reference.grad, atol=1e-4)


@pytest.mark.slow
def test_bert_base_adapter_training_step_is_the_same_inside_fast_cpu_attention():
    model = bert_base(seed=0).train()
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(64), name="task")
    inputs = {"input_ids": torch.randint(1000, 30000, (4, 128), generator=torch.Generator().manual_seed(0)),
              "attention_mask": torch.ones(4, 128, dtype=torch.long), "labels": torch.tensor([0, 1, 1, 0])}
    inputs["attention_mask"][1, 100:] = 0
    grads = []
    for context in (contextlib.nullcontext(), adaptkit.cpu_speed.fast_cpu_attention()):
        model.zero_grad()
        torch.manual_seed(2)
        with context:
            model(**inputs).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert len(grads[0]) > 24 * 4
    for name, grad in grads[1].items():
        assert torch.allclose(grad, grads[0][name], atol=1e-5, rtol=1e-4), name


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bert_base_adapter_sums_are_the_unfused_ones_with_two_adapters_in_one_graph(dtype, monkeypatch):
    """At bert-base size, in float32 and in bfloat16 (base and adapters), the accumulated sum with
    autograd and the sum written in place without it give the same logits, and both match
    ``onto + delta`` for two adapters whose outputs meet in one loss."""
    model = bert_base(seed=0).to(dtype)
    config = adaptkit.AdapterConfig.houlsby(64, init_std=0.05, keep_fp32=False)
    for name in ("a", "b"):
        adaptkit.add_adapter(model, config, name=name)
    with torch.no_grad():  # biases start at zero: move them, so that a bias added twice shows
        for name, param in model.named_parameters():
            if "adaptkit" in name:
                param.add_(0.01)
    inputs = {"input_ids": torch.randint(1000, 30000, (2, 16), generator=torch.Generator().manual_seed(0))}

    def both():
        outs = []
        for name in ("a", "b"):
            adaptkit.set_active_adapter(model, name)
            outs.append(model(**inputs).logits)
        return outs
    fused = both()
    (fused[0] - fused[1]).float().square().sum().backward()  # one graph through both adapters
    with torch.inference_mode():
        in_place = both()
    monkeypatch.setattr(BottleneckAdapter, "added_to",
                        lambda self, onto, source, overwrite=False: onto + self.delta(source))
    with torch.no_grad():
        unfused = both()
    tolerance = {"rtol": 0, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 0.02, "atol": 0.02}
    for f, i, u in zip(fused, in_place, unfused):
        assert torch.equal(f.detach(), i)
        torch.testing.assert_close(i, u, **tolerance)
    assert not torch.equal(in_place[0], in_place[1])

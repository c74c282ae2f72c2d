"""A smoke test over model families (the full sweep is benchmarks/coverage.py), and the block
shapes the structural fallback learned from it: mixtures of experts, parallel layer lists, and
blocks with no attention at all."""

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

import adaptkit
from adaptkit.targets import find_blocks
from tiny_models import logits, tiny_config, tiny_inputs, tiny_model

FAMILIES = {
    "bert": "encoder", "distilbert": "encoder", "gpt2": "decoder (Conv1D)", "llama": "decoder",
    "t5": "encoder-decoder", "bart": "encoder-decoder", "mpnet": "fallback encoder", "gemma": "fallback decoder",
    "mixtral": "fallback, mixture of experts", "qwen2_moe": "fallback, experts + shared expert",
    "xlm": "fallback, parallel attention/feed-forward lists",
    "rembert": "fallback; crashed in the fingerprint before exact positions",
}


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_adapts_trains_disables_and_reloads(model_type, tmp_path):
    model = tiny_model(model_type)
    inputs = tiny_inputs(model)
    base = logits(model, inputs)
    sites = adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8))
    for kind in ("attention", "ffn"):
        layers = {s.name.split(".adaptkit")[0] for s in sites if s.kind == kind}
        assert layers, kind
    blocks = find_blocks(model)
    depths = {(b.rsplit(".", 2)[0], b.rsplit(".", 1)[1]) for b in blocks}
    for parent, depth in depths:
        in_layer = [s for s in sites if any(s.name.startswith(f"{parent}.{lst}.{depth}.")
                                            for lst in {b.rsplit(".", 2)[1] for b in blocks})]
        assert {s.kind for s in in_layer} == {"attention", "ffn"}, (parent, depth)
    with adaptkit.adapters_disabled(model):
        assert torch.equal(logits(model, inputs), base)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.zero_grad()
    nn.functional.cross_entropy(model(**inputs).logits, torch.tensor([0, 1])).backward()
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    optimizer.step()
    adapted = logits(model, inputs)
    adaptkit.save_adapter(model, tmp_path)
    fresh = tiny_model(model_type)
    adaptkit.load_adapter(fresh, tmp_path)
    assert torch.equal(logits(fresh, inputs), adapted)


def test_mixture_of_experts_is_adapted_at_the_sum_of_its_experts():
    model = tiny_model("mixtral")
    sites = adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8))
    assert {s.name for s in sites if s.kind == "ffn"} == {"model.layers.0.mlp", "model.layers.1.mlp"}


def test_parallel_layer_lists_count_as_one_layer():
    sites = adaptkit.add_adapter(tiny_model("xlm"), adaptkit.AdapterConfig.houlsby(8))
    assert {(s.name, s.kind) for s in sites} >= {("transformer.attentions.0.out_lin", "attention"),
                                                  ("transformer.ffns.0.lin2", "ffn")}


def test_blocks_without_attention_are_refused_saying_so():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("mamba"))
    with pytest.raises(adaptkit.TargetModuleError, match=r"have no attention \(they mix tokens otherwise.*target_modules"):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8))
    assert adaptkit.list_adapters(model) == {}


def test_reformer_reversible_layers_give_the_adapters_gradients():
    torch.manual_seed(0)
    config = AutoConfig.for_model("reformer", hidden_size=64, num_attention_heads=2, attention_head_size=32,
                                  attn_layers=["local", "local"], feed_forward_size=128, vocab_size=100,
                                  axial_pos_embds_dim=[32, 32], axial_pos_shape=[4, 4], local_attn_chunk_length=8,
                                  max_position_embeddings=16, num_labels=2, pad_token_id=0)
    model = AutoModelForSequenceClassification.from_config(config).train()
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8))
    model(input_ids=torch.randint(3, 100, (2, 16))).logits.sum().backward()
    own = [p for n, p in model.named_parameters() if p.requires_grad]
    assert own and all(p.grad is not None for p in own)
    adaptkit.delete_adapter(model, "default")
    assert not getattr(model, "_require_grads_hooks", None)


class _Indexer(nn.Module):
    def __init__(self):
        super().__init__()
        self.wq = nn.Linear(16, 16)


class _Attention(nn.Module):
    """An attention whose helper (a sparse-attention indexer, as AXK2's) has a hidden-width
    projection registered after the output projection."""

    def __init__(self):
        super().__init__()
        self.q_proj, self.o_proj, self.indexer = nn.Linear(16, 16), nn.Linear(16, 16), _Indexer()

    def forward(self, x):
        self.indexer.wq(x)
        return self.o_proj(self.q_proj(x))


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn, self.up, self.down = _Attention(), nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        x = x + self.self_attn(x)
        return x + self.down(torch.relu(self.up(x)))


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([_Block(), _Block()])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_the_attention_output_is_its_own_projection_not_a_helpers():
    sites = adaptkit.resolve_sites(_Toy(), adaptkit.AdapterConfig.houlsby(4))
    assert {s.name for s in sites if s.kind == "attention"} == {"layers.0.self_attn.o_proj", "layers.1.self_attn.o_proj"}
    assert {s.name for s in sites if s.kind == "ffn"} == {"layers.0.down", "layers.1.down"}


def test_a_gate_registered_after_the_output_projection_is_not_taken_for_it():
    model = _Toy()
    for layer in model.layers:
        layer.self_attn.gate_proj = nn.Linear(16, 16)
    sites = adaptkit.resolve_sites(model, adaptkit.AdapterConfig.houlsby(4))
    assert {s.name for s in sites if s.kind == "attention"} == {"layers.0.self_attn.o_proj", "layers.1.self_attn.o_proj"}


def test_copies_of_a_list_of_head_layers_are_not_taken_for_blocks(tmp_path):
    """MusicGen's decoder has one head Linear per codebook in a ModuleList; an adapter's copies of
    them (a Linear inside each Linear) must not make that list look like a stack of blocks, or the
    checkpoint records more blocks than a fresh model has (coverage.py: crashed on load)."""
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM
    config = MusicgenDecoderConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
                                   vocab_size=64, num_codebooks=2)
    torch.manual_seed(0)
    model = MusicgenForCausalLM(config).eval()
    blocks = find_blocks(model)
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(8, train_vocab_head=True))
    assert find_blocks(model) == blocks
    adaptkit.save_adapter(model, tmp_path)
    torch.manual_seed(0)
    adaptkit.load_adapter(MusicgenForCausalLM(config).eval(), tmp_path)

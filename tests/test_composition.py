"""Compositions (Stack, Fuse, Parallel, Average) compute AdapterHub 1.3.0's formulas, written out
here as hooks on the base model (adapters disabled) that apply them by hand; nesting, refusals,
mixed batches, threads and the forward that writes nothing hold for them too."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

import adaptkit
from adaptkit import Average, Fuse, Parallel, Stack
from adaptkit.params import SLOT_ATTR
from adaptkit.state import get_state
from tiny_models import tiny_config, tiny_inputs, tiny_model

PLAIN = dict(size=8, init_std=0.2, train_layernorms=False, train_head=False)


def model_with(placement: str, names=("a", "b", "c"), model_type: str = "bert", **fields):
    model = tiny_model(model_type)
    for name in names:
        adaptkit.add_adapter(model, adaptkit.AdapterConfig(placement=placement, **{**PLAIN, **fields}), name=name)
    return model


def bottleneck(adapter, h):
    """An adapter's bottleneck: up(act(down(h)))."""
    return F.linear(adapter.act(F.linear(h, adapter.down.weight, adapter.down.bias)), adapter.up.weight, adapter.up.bias)


def fusion(layer, query, ups, residual):
    """BertFusion, written out: softmax over adapters of Q(q)·K(up_i), mixing V(up_i), plus the residual."""
    q = F.linear(query, layer.query.weight, layer.query.bias)
    keys = F.linear(ups, layer.key.weight, layer.key.bias)
    values = F.linear(ups, layer.value.weight) if layer.config.value else ups
    probs = torch.softmax(torch.einsum("btd,btnd->btn", q, keys), dim=-1)
    return torch.einsum("btn,btnd->btd", probs, values) + residual


def sites(model):
    return [m for m in model.modules() if hasattr(m, SLOT_ATTR) and len(getattr(m, SLOT_ATTR).adapters)]


@contextmanager
def by_hand(model, formula, seq_bn: bool):
    """The base model (adapters disabled) with ``formula(slot, value)`` replacing each site's output:
    at a Houlsby site ``value`` is the projection's output h; at a SeqBn site the LayerNorm's input
    y = h + x, and ``formula(slot, y, norm)`` returns the LayerNorm's output."""
    handles = []
    for module in sites(model):
        slot = getattr(module, SLOT_ATTR)
        if seq_bn:
            hook = lambda m, args, out, slot=slot: formula(slot, args[0], lambda t, m=m: F.layer_norm(
                t, m.normalized_shape, m.weight, m.bias, m.eps))
        else:
            hook = lambda m, args, out, slot=slot: formula(slot, out)
        handles.append(module.register_forward_hook(hook))
    try:
        with adaptkit.adapters_disabled(model):
            yield
    finally:
        for handle in handles:
            handle.remove()


def outputs(model, inputs):
    """The last hidden state and the logits, side by side."""
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return torch.cat([out.hidden_states[-1].flatten(1), out.logits], dim=1)


def run(model, inputs, routing=None, formula=None, seq_bn=False):
    if formula is not None:
        with by_hand(model, formula, seq_bn):
            return outputs(model, inputs)
    with adaptkit.using(model, routing):
        return outputs(model, inputs)


def moved_and_equal(model, inputs, routing, formula, seq_bn=False):
    got = run(model, inputs, routing)
    want = run(model, inputs, formula=formula, seq_bn=seq_bn)
    base = run(model, inputs, None)
    assert (want - base).abs().max() > 1e-2  # the formula moves the output: no no-op comparison
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- Houlsby sites: h only

def test_stack_feeds_each_adapter_the_previous_output():
    model = model_with("houlsby")
    a = lambda s, h: h + bottleneck(s.adapters["a"], h)
    moved_and_equal(model, tiny_inputs(model), Stack("a", "b"),
                    lambda s, h: a(s, h) + bottleneck(s.adapters["b"], a(s, h)))


def test_average_is_adapterhubs_mean_of_weighted_outputs():
    """AdapterHub 1.3.0: torch.mean(stack(out_i) * w_i) = Σ w_i (h + up_i) / n, residual included."""
    model = model_with("houlsby")
    block = Average("a", "b", "c", weights=[1, 2, 5])
    w = [1 / 8, 2 / 8, 5 / 8]
    moved_and_equal(model, tiny_inputs(model), block,
                    lambda s, h: sum(wi * (h + bottleneck(s.adapters[n], h)) for wi, n in zip(w, "abc")) / 3)
    unnormalised = Average("a", "b", weights=[1, 1], normalize_weights=False)
    assert unnormalised.weights == (1.0, 1.0)
    moved_and_equal(model, tiny_inputs(model), unnormalised,
                    lambda s, h: h + (bottleneck(s.adapters["a"], h) + bottleneck(s.adapters["b"], h)) / 2)


@pytest.mark.parametrize("preset", ["dynamic", "static"])
def test_fuse_attends_over_the_adapters_up_projections(preset):
    model = model_with("houlsby")
    adaptkit.add_fusion(model, Fuse("a", "b", "c"), config=preset, train_head=False)
    for layer in get_state(model).fusions["a,b,c"].site_modules.values():  # away from the identity init
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(torch.randn_like(p) * 0.3)

    def fused(s, h):
        ups = torch.stack([bottleneck(s.adapters[n], h) for n in "abc"], dim=2)
        return fusion(s.fusions["a,b,c"], h, ups, h)

    moved_and_equal(model, tiny_inputs(model), Fuse("a", "b", "c"), fused)


def test_fuse_with_the_residual_before_adds_it_to_keys_and_values():
    """AdapterHub's residual_before adds the residual in place to the tensor its keys and values share."""
    model = model_with("houlsby")
    adaptkit.add_fusion(model, Fuse("a", "b"), config=adaptkit.FusionConfig(residual_before=True), train_head=False)

    def fused(s, h):
        ups = torch.stack([bottleneck(s.adapters[n], h) for n in "ab"], dim=2) + h[:, :, None, :]
        return fusion(s.fusions["a,b"], h, ups, 0)

    moved_and_equal(model, tiny_inputs(model), Fuse("a", "b"), fused)


def test_stack_of_a_language_adapter_under_a_fusion():
    """MAD-X with fusion: Stack(lang, Fuse(t1, t2)); the Fuse reads the language adapter's output."""
    model = model_with("houlsby", names=("lang", "t1", "t2"))
    adaptkit.add_fusion(model, Fuse("t1", "t2"), train_head=False, activate=False)

    def formula(s, h):
        h = h + bottleneck(s.adapters["lang"], h)
        ups = torch.stack([bottleneck(s.adapters[n], h) for n in ("t1", "t2")], dim=2)
        return fusion(s.fusions["t1,t2"], h, ups, h)

    moved_and_equal(model, tiny_inputs(model), Stack("lang", Fuse("t1", "t2")), formula)


def test_parallel_runs_each_child_on_its_copy_of_the_batch():
    model = model_with("houlsby", train_head=True)  # each adapter its own head copy
    inputs = tiny_inputs(model)
    together = run(model, inputs, Parallel("a", Stack("b", "c")))
    assert together.shape[0] == 2 * inputs["input_ids"].shape[0]
    torch.testing.assert_close(together, torch.cat([run(model, inputs, "a"), run(model, inputs, Stack("b", "c"))]))
    average = Average("b", "c", weights=[0.3, 0.7])
    torch.testing.assert_close(run(model, inputs, Parallel(average, "a")),
                               torch.cat([run(model, inputs, average), run(model, inputs, "a")]))
    labels = torch.tensor([0, 1])
    with adaptkit.using(model, Parallel("a", "b")):  # labels are copied with the batch
        assert model(**inputs, labels=labels).loss.isfinite()
        with pytest.raises(adaptkit.AdapterError, match="outside a call of the model"):
            model.bert(**inputs)  # the copy happens at the model's input: a submodule alone is refused


@pytest.mark.parametrize("auto, model_type", [(AutoModelForCausalLM, "llama"), (AutoModelForCausalLM, "gpt2"),
                                              (AutoModelForSeq2SeqLM, "t5")])
def test_generate_parallel_continues_each_childs_copy_as_that_child_alone(auto, model_type):
    """generate keeps one row of state per example: generate_parallel copies the batch first (as
    AdapterHub does), greedy and beam search give each child's own continuation, child i's rows at
    i·B..; a plain generate under a Parallel is refused by name and leaves the model usable."""
    torch.manual_seed(0)
    model = auto.from_config(tiny_config(model_type)).eval()
    for name in ("a", "b"):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig(size=8, init_std=0.5), name=name, activate=False)
    ids = torch.randint(5, 100, (2, 5))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    for beams in (1, 2):
        settings = dict(attention_mask=mask, max_new_tokens=4, do_sample=False, num_beams=beams)
        alone = []
        for name in ("a", "b"):
            with adaptkit.using(model, name):
                alone.append(model.generate(ids, **settings))
        assert not torch.equal(alone[0], alone[1])  # the adapters move the continuation
        both = adaptkit.generate_parallel(model, Parallel("a", "b"), input_ids=ids, **settings)
        assert torch.equal(both, torch.cat(alone))
    with adaptkit.using(model, Parallel("a", "b")), pytest.raises(adaptkit.AdapterError, match="generate_parallel"):
        model.generate(ids, max_new_tokens=2)
    assert not get_state(model).forwards and list(adaptkit.list_adapters(model)) == ["a", "b"]
    with pytest.raises(adaptkit.AdapterError, match="runs a Parallel"):
        adaptkit.generate_parallel(model, Stack("a", "b"), input_ids=ids)


def test_parallel_under_activation_checkpointing_trains_as_without():
    model = model_with("houlsby", model_type="llama", train_head=True)
    inputs = tiny_inputs(model)

    def grads(checkpointing: bool):
        model.zero_grad()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        with adaptkit.using(model, Parallel("a", "b")):
            model.train()(**inputs).logits.pow(2).sum().backward()
        model.eval()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    adaptkit.set_trainable_adapters(model, ["a", "b"])
    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name])


# ---------------------------------------------------------------- SeqBn sites: LN(h + x)

def test_stack_of_seq_bn_adapters_renormalises_between_them():
    """AdapterHub's SeqBn Stack: y1 = y + up_a(LN y), y2 = y1 + up_b(LN y1), out LN(y2)."""
    model = model_with("pfeiffer")

    def formula(s, y, ln):
        y1 = y + bottleneck(s.adapters["a"], ln(y))
        return ln(y1 + bottleneck(s.adapters["b"], ln(y1)))

    moved_and_equal(model, tiny_inputs(model), Stack("a", "b"), formula, seq_bn=True)


def test_fuse_of_seq_bn_adapters_queries_the_normalised_state():
    model = model_with("pfeiffer")
    adaptkit.add_fusion(model, Fuse("a", "b"), train_head=False)

    def formula(s, y, ln):
        ups = torch.stack([bottleneck(s.adapters[n], ln(y)) for n in "ab"], dim=2)
        # the fusion adds the residual h; the LayerNorm adds x: LN(h + x + mix) = LN(y + mix)
        return ln(fusion(s.fusions["a,b"], ln(y), ups, y))

    moved_and_equal(model, tiny_inputs(model), Fuse("a", "b"), formula, seq_bn=True)


def test_gpt2_seq_bn_compositions_read_the_block_output():
    """GPT-2's SeqBn site is the block's output y = h + r (no LayerNorm after it): a Stack is
    y1 = y + up_a(y), y1 + up_b(y1); a Fuse y + Σ p_i up_i(y)."""
    model = model_with("pfeiffer", model_type="gpt2")
    adaptkit.add_fusion(model, Fuse("a", "b"), train_head=False, activate=False)
    inputs = tiny_inputs(model)

    def on_block_output(formula):
        def hook(slot, out):
            y = out[0] if isinstance(out, tuple) else out
            result = formula(slot, y)
            return (result,) + out[1:] if isinstance(out, tuple) else result
        return hook

    def stacked(s, y):
        y1 = y + bottleneck(s.adapters["a"], y)
        return y1 + bottleneck(s.adapters["b"], y1)

    def fused(s, y):
        return fusion(s.fusions["a,b"], y, torch.stack([bottleneck(s.adapters[n], y) for n in "ab"], dim=2), y)

    moved_and_equal(model, inputs, Stack("a", "b"), on_block_output(stacked))
    moved_and_equal(model, inputs, Fuse("a", "b"), on_block_output(fused))
    with pytest.raises(adaptkit.AdapterError, match="scales the residual"):
        run(model, inputs, Average("a", "b"))


@pytest.mark.parametrize("block, config, match", [
    (Average("a", "b"), None, "scales the residual"),
    (Fuse(Stack("a", "c"), "b"), "dynamic", "normalises the state twice"),
    (Fuse("a", "b"), adaptkit.FusionConfig(residual_before=True), "residual_before"),
    (Fuse("a", "b"), adaptkit.FusionConfig(query_before_ln=True), "query_before_ln"),
])
def test_seq_bn_steps_that_need_the_residual_apart_are_refused(block, config, match):
    model = model_with("pfeiffer")
    if config is not None:
        adaptkit.add_fusion(model, block, config=config, train_head=False, activate=False)
    with pytest.raises(adaptkit.AdapterError, match=match):
        run(model, tiny_inputs(model), block)


def test_a_seq_bn_average_that_scales_the_residual_is_refused_before_any_forward():
    model = model_with("pfeiffer")
    scaled, unit = Average("a", Stack("b", "c"), weights=[1, 3]), Average("a", "b", weights=[1, 1], normalize_weights=False)
    for enter in (lambda: adaptkit.set_active_adapter(model, scaled), lambda: adaptkit.using(model, scaled).__enter__(),
                  lambda: adaptkit.per_example_adapters(model, [scaled, "a"]).__enter__()):
        with pytest.raises(adaptkit.AdapterError, match=r"scales the residual by Σw/n = 0.5"):
            enter()
    assert adaptkit.active_adapter(model) == "c"
    adaptkit.set_active_adapter(model, unit)  # Σw = n: the residual stays as it is
    assert adaptkit.active_adapter(model) == unit


# ---------------------------------------------------------------- nesting and refusals

@pytest.mark.parametrize("make, match", [
    (lambda: Stack("a", Stack("b", "c")), "cannot nest Stack inside Stack"),
    (lambda: Fuse("a", Parallel("b", "c")), "cannot nest Parallel inside Fuse"),
    (lambda: Fuse("a", Average("b", "c")), "cannot nest Average inside Fuse"),
    (lambda: Average("a", Fuse("b", "c")), "cannot nest Fuse inside Average"),
    (lambda: Parallel("a", Parallel("b", "c")), "cannot nest Parallel inside Parallel"),
    (lambda: Stack("a", Parallel("b", Average("c", Stack("a", "b")))), "too deep"),
    (lambda: Stack(), "at least one"),
    (lambda: Average("a", "b", weights=[1]), "2 numeric weights"),
    (lambda: Average("a", "b", weights=[1, -1]), "sum to 0 .* normalize_weights=False"),
    (lambda: Fuse("a", Stack("b", "a")), "fuses 'a' twice"),
])
def test_nestings_adapterhub_refuses_are_refused_by_name(make, match):
    with pytest.raises(adaptkit.AdapterError, match=match):
        make()


def test_routing_refusals_name_the_problem_and_leave_the_model_as_it_was():
    model = model_with("houlsby")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig(placement="pfeiffer", **PLAIN), name="seq", activate=False)
    before = adaptkit.active_adapter(model)
    for routing, match in [(Stack("a", "nope"), "no adapter 'nope'"), (Fuse("a", "b"), "add_fusion"),
                           (Stack("a", "seq"), "different placements")]:
        with pytest.raises(adaptkit.AdapterError, match=match):
            adaptkit.set_active_adapter(model, routing)
        with pytest.raises(adaptkit.AdapterError, match=match):
            with adaptkit.using(model, routing):
                pass
    assert adaptkit.active_adapter(model) == before
    adapterhub_stack = type("Stack", (), {"__module__": "adapters.composition"})  # as AdapterHub's class is named
    with pytest.raises(adaptkit.AdapterError, match="AdapterHub's blocks are not adaptkit's"):
        adaptkit.set_active_adapter(model, adapterhub_stack())
    with pytest.raises(adaptkit.AdapterError, match="Parallel copies the whole batch"):
        with adaptkit.per_example_adapters(model, [Parallel("a", "b"), "a"]):
            pass
    adaptkit.add_fusion(model, Fuse("a", "b"), train_head=False, activate=False)
    with pytest.raises(adaptkit.AdapterError, match="fusion 'a,b' fuses the same adapters in another order"):
        adaptkit.set_active_adapter(model, Fuse("b", "a"))


def test_a_composition_with_none_of_its_adapters_at_a_site_leaves_it_as_the_base():
    model = tiny_model("bert")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig(layers=[0], **PLAIN), name="low")
    adaptkit.add_adapter(model, adaptkit.AdapterConfig(layers=[1], **PLAIN), name="high")
    inputs = tiny_inputs(model)
    moved_and_equal(model, inputs, Stack("low", "high"),
                    lambda s, h: h + bottleneck(s.adapters["low" if "low" in s.adapters else "high"], h))


# ---------------------------------------------------------------- mixed batches, threads, writes

@pytest.mark.parametrize("placement, own_copies", [("pfeiffer", False), ("houlsby", True)])
def test_mixed_batch_with_compositions_matches_each_alone(placement, own_copies):
    """Each example its own block; with own LayerNorm and head copies (a fusion's head among them)
    each row runs its owner's."""
    model = model_with(placement, train_layernorms=own_copies, train_head=own_copies)
    adaptkit.add_fusion(model, Fuse("a", "b"), train_head=own_copies, activate=False)
    if own_copies:
        with torch.no_grad():
            for entry in [*get_state(model).adapters.values(), *get_state(model).fusions.values()]:
                for param in entry.task_values().values():
                    param.add_(torch.randn_like(param) * 0.2)
    average = (Average("b", "c", weights=[0.3, 0.7]) if placement == "houlsby"  # SeqBn: only Σw = n runs
               else Average("b", "c", weights=[0.6, 1.4], normalize_weights=False))
    routes = [Stack("a", "b"), "c", None, Fuse("a", "b"), average, Stack("a", average)]
    inputs = tiny_inputs(model, batch=len(routes))
    with adaptkit.per_example_adapters(model, routes):
        mixed = outputs(model, inputs)
    for row, routing in enumerate(routes):
        torch.testing.assert_close(mixed[row], run(model, inputs, routing)[row], atol=1e-6, rtol=1e-5)


def test_threads_with_different_compositions_get_their_own_outputs():
    model = model_with("houlsby", train_head=True)
    adaptkit.add_fusion(model, Fuse("a", "b"), activate=False)
    inputs = tiny_inputs(model)
    routes = [Stack("a", "b"), Fuse("a", "b"), Average("b", "c"), Parallel("a", "c")]
    expected = [run(model, inputs, r) for r in routes]
    start, failures = threading.Barrier(len(routes)), []

    def work(index):
        start.wait()
        for _ in range(30):
            got = run(model, inputs, routes[index])
            if not torch.equal(got, expected[index]):
                failures.append(routes[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(routes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []

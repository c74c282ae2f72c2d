"""Several threads on one shared model: each thread's routing is its own, the outputs are exactly
those of running the requests one after another, and the base model is never touched."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import GPT2LMHeadModel

import adaptkit
from tiny_models import tiny_config, tiny_inputs, tiny_model

THREADS, ROUNDS = 4, 200


def perturbed(model, name: str, seed: int) -> None:
    """Move adapter ``name``'s LayerNorm and head copies off the base values, so a thread that ran
    the base's (or another adapter's) norms would show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adaptkit.model.adapter_entry(model, name)[1].task_values().values():
            param.add_(torch.randn(param.shape, generator=generator) * 0.2)


def two_adapter_bert():
    model = tiny_model("bert")
    base = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    for seed, name in enumerate(("a", "b")):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, init_std=0.2), name=name)
        perturbed(model, name, seed)
    adaptkit.set_active_adapter(model, "a")
    return model, base


def assert_base_untouched(model, base) -> None:
    """Every base Parameter is the same object, holding the same values, as before the adapters."""
    for name, (param, values) in base.items():
        assert model.get_parameter(name) is param, name
        assert torch.equal(param.detach(), values), name


def run_threads(work, inputs_of):
    """``work(thread, round)`` in THREADS threads, ROUNDS times each; returns the outputs by thread."""
    start = threading.Barrier(THREADS)

    def thread(index):
        start.wait()
        return [work(index, inputs_of(index, r)) for r in range(ROUNDS)]

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(thread, range(THREADS)))


def batches(model):
    return [tiny_inputs(model, batch=4, seed=seed) for seed in range(3)]


def serial(model, routing, inputs):
    """The output of one request, alone, under a routing context."""
    context = (adaptkit.adapters_disabled(model) if routing is None else
               adaptkit.per_example_adapters(model, routing) if isinstance(routing, list) else
               adaptkit.using(model, routing))
    with context, torch.no_grad():
        return model(**inputs).logits


ROUTINGS = {
    "one adapter (the default)": ["default"] * THREADS,
    "different adapters": ["a", "b", None, "a"],
    "mixed batches": [["a", "b", None, "a"], ["b", "b", "a", None], [None, "a", "b", "b"], ["a"] * 4],
    "disabled beside an adapter": [None, "a", None, "b"],
}


@pytest.mark.parametrize("case", ROUTINGS)
def test_threads_get_exactly_the_serial_outputs_and_leave_the_base_alone(case):
    model, base = two_adapter_bert()
    data = batches(model)
    routings = ROUTINGS[case]
    expected = {(t, i): (serial(model, "a", data[i]) if routings[t] == "default" else serial(model, routings[t], data[i]))
                for t in range(THREADS) for i in range(len(data))}
    assert not torch.equal(expected[(1, 0)], expected[(2, 0)]) or case == "one adapter (the default)"

    def work(thread, inputs):
        routing = routings[thread]
        if routing == "default":
            with torch.no_grad():
                return model(**inputs).logits
        return serial(model, routing, inputs)

    outputs = run_threads(work, lambda t, r: data[(t + r) % len(data)])
    for thread, results in enumerate(outputs):
        for round_, got in enumerate(results):
            assert torch.equal(got, expected[(thread, (thread + round_) % len(data))]), (case, thread, round_)
    for name in ("a", "b"):
        adaptkit.delete_adapter(model, name)
    assert_base_untouched(model, base)


def test_generate_in_two_threads_equals_serial():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_config("gpt2")).eval()
    base = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    for seed, name in enumerate(("a", "b")):
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, init_std=0.5), name=name)
        perturbed(model, name, seed)
    prompt = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])

    def generate(name):
        with adaptkit.using(model, name), torch.no_grad():
            return model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)

    expected = {name: generate(name) for name in ("a", "b")}
    assert not torch.equal(expected["a"], expected["b"])
    start = threading.Barrier(2)

    def thread(name):
        start.wait()
        return [generate(name) for _ in range(10)]

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(("a", "b"), pool.map(thread, ("a", "b"))))
    for name, outputs in results.items():
        assert all(torch.equal(out, expected[name]) for out in outputs), name
    for name in ("a", "b"):
        adaptkit.delete_adapter(model, name)
    assert_base_untouched(model, base)


def test_changing_adapters_while_another_thread_is_inside_a_context_is_refused():
    model, _ = two_adapter_bert()
    inside, leave = threading.Event(), threading.Event()

    def hold():
        with adaptkit.using(model, "b"):
            inside.set()
            leave.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert inside.wait(10)
        for change in (lambda: adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(4), name="c"),
                       lambda: adaptkit.delete_adapter(model, "a"),
                       lambda: adaptkit.set_active_adapter(model, "b")):
            with pytest.raises(adaptkit.AdapterError, match="other threads use this model"):
                change()
        assert set(adaptkit.list_adapters(model)) == {"a", "b"} and adaptkit.active_adapter(model) == "a"
    finally:
        leave.set()
        worker.join()
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(4), name="c", activate=False)  # now it may


def test_changing_adapters_while_another_thread_runs_a_forward_is_refused():
    model, _ = two_adapter_bert()
    inside, leave = threading.Event(), threading.Event()
    layer = model.bert.encoder.layer[0]

    def stall(module, args):  # a forward that stays in flight until told to go on
        if threading.current_thread() is not threading.main_thread():
            inside.set()
            leave.wait(10)

    handle = layer.register_forward_pre_hook(stall)
    worker = threading.Thread(target=lambda: model(**tiny_inputs(model)))
    worker.start()
    try:
        assert inside.wait(10)
        with pytest.raises(adaptkit.AdapterError, match="1 forward"):
            adaptkit.delete_adapter(model, "b")
    finally:
        leave.set()
        worker.join()
        handle.remove()
    adaptkit.delete_adapter(model, "b")

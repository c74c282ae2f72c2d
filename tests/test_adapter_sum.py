"""``BottleneckAdapter.added_to``: the up-projection accumulating into the sum computes exactly
``onto + up(act(down(source)))``, with its gradients, and writes into ``onto`` only where nothing
else holds it (inference, a Linear's fresh output, no hook before the adapter's)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import adaptkit
from adaptkit.layer import BottleneckAdapter
from tiny_models import tiny_inputs, tiny_model


def adapter(dtype=torch.float32) -> BottleneckAdapter:
    torch.manual_seed(0)
    config = adaptkit.AdapterConfig.houlsby(size=8, init_std=0.3)
    module = BottleneckAdapter(16, config, dtype=dtype)
    torch.nn.init.normal_(module.up.bias)
    torch.nn.init.normal_(module.down.bias)
    return module


def written_out(module: BottleneckAdapter, onto: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    inner = torch.nn.functional.gelu(source.float() @ module.down.weight.T + module.down.bias)
    return onto + (inner @ module.up.weight.T + module.up.bias).to(onto.dtype)


LAYOUTS = {
    "contiguous": lambda t: t,
    "transposed view": lambda t: t.transpose(0, 1).contiguous().transpose(0, 1),
    "two dimensions": lambda t: t.reshape(-1, t.shape[-1]),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_sum_and_its_gradients_are_the_written_out_ones(layout):
    module = adapter()
    torch.manual_seed(1)
    onto = LAYOUTS[layout](torch.randn(3, 5, 16)).requires_grad_()
    source = LAYOUTS[layout](torch.randn(3, 5, 16)).requires_grad_()
    before, version = onto.detach().clone(), onto._version
    got = module.added_to(onto, source)
    want = written_out(module, onto, source)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert got.shape == onto.shape
    assert onto._version == version and torch.equal(onto.detach(), before)

    weights = torch.randn_like(want)
    leaves = [onto, source, *module.parameters()]
    got_grads = torch.autograd.grad((got * weights).sum(), leaves)
    want_grads = torch.autograd.grad((want * weights).sum(), leaves)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)


def test_forward_is_the_sum_onto_its_own_input():
    module, hidden = adapter(), torch.randn(2, 4, 16)
    torch.testing.assert_close(module(hidden), written_out(module, hidden, hidden), rtol=0, atol=1e-6)


def test_a_float32_adapter_on_a_bfloat16_output_adds_in_the_outputs_dtype():
    module, onto = adapter(), torch.randn(2, 4, 16, dtype=torch.bfloat16)
    got = module.added_to(onto, onto)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, written_out(module, onto, onto))


def test_under_autocast_the_sum_is_the_one_without_fusion():
    """An in-place product is not autocast: under bf16 autocast the bottleneck runs in bf16."""
    module, onto = adapter(), torch.randn(2, 4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = module.added_to(onto, onto)
        want = onto + module.delta(onto)
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0)


class InPlaceAdds(TorchDispatchMode):
    """Counts in-place additions (the adapters' sums written into their projections' outputs)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten.add_.Tensor
        return func(*args, **(kwargs or {}))


def adapted_bert():
    model = tiny_model("bert").eval()
    adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, init_std=0.3), name="a")
    return model, tiny_inputs(model)


def test_inference_writes_the_sum_into_the_projection_output_with_the_same_result():
    model, inputs = adapted_bert()
    with_autograd = model(**inputs).logits.detach()  # a new tensor for every sum
    with torch.inference_mode(), InPlaceAdds() as adds:
        in_inference = model(**inputs).logits
    assert adds.count >= 2 * model.config.num_hidden_layers  # every adapted projection's sum
    torch.testing.assert_close(in_inference, with_autograd, rtol=0, atol=1e-6)


@pytest.mark.parametrize("where", ["on the projection", "on every module"])
def test_a_hook_that_saw_the_output_first_keeps_the_projections_own(where):
    """A user's hook registered before add_adapter (or a global one) still holds what the
    projection computed: the sum goes to a new tensor."""
    model = tiny_model("bert").eval()
    dense = model.bert.encoder.layer[0].output.dense
    seen = {}

    def keep(module, args, output):
        if module is dense:
            seen["output"], seen["input"] = output, args[0]
    handle = (dense.register_forward_hook(keep) if where == "on the projection"
              else torch.nn.modules.module.register_module_forward_hook(keep))
    try:
        adaptkit.add_adapter(model, adaptkit.AdapterConfig.houlsby(size=8, init_std=0.3), name="a")
        inputs = tiny_inputs(model)
        with torch.inference_mode(), InPlaceAdds() as adds:
            model(**inputs)
    finally:
        handle.remove()
    torch.testing.assert_close(seen["output"], torch.nn.functional.linear(seen["input"], dense.weight, dense.bias))
    if where == "on every module":
        assert adds.count == 0

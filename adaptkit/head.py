"""An adapter's own classification head (AdapterHub's), run on the base model's output.

An AdapterHub checkpoint trains its head with its adapter; on transformers 5 the head goes with
the adaptkit adapter: loaded onto the bare base model (``AutoModel``), the adapter's head adds
``logits`` to the model's output while the adapter runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.activations import get_activation
from transformers.utils import ModelOutput

from .errors import AdapterError, CheckpointError
from .layer import AdapterSlot, UninitialisedLinear, owned_key
from .params import head_parameter_names
from .routing import Parallel, copy_owner



def refuse_beside_a_head(model: nn.Module, source: object) -> None:
    """An adapter's own head adds ``logits`` to the bare base model's output; a task model's output
    is already its head's."""
    if getattr(model, "base_model", model) is not model or head_parameter_names(model):
        raise CheckpointError(
            f"{source} holds a classification head, which loads as the adapter's own head onto the bare base "
            f"model, but this model is {type(model).__name__}, with a head of its own. Load the base with "
            "AutoModel.from_pretrained, or pass load_head=False to load the adapter alone")


class ClassificationHead(nn.Sequential):
    """dropout -> Linear(d, d) -> activation -> ... -> dropout -> Linear(d, labels), module for
    module as AdapterHub builds it, so that its weight names load unchanged."""

    def __init__(self, hidden_size: int, spec: dict[str, Any], device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None, initialise: bool = True) -> None:
        modules: list[nn.Module] = []
        for layer in range(spec["layers"]):
            modules.append(nn.Dropout(spec["dropout"]))
            if layer < spec["layers"] - 1:
                modules.append(UninitialisedLinear(hidden_size, hidden_size, device=device, dtype=dtype))
                if spec["activation"]:
                    modules.append(get_activation(spec["activation"]))
            else:
                modules.append(UninitialisedLinear(hidden_size, spec["num_labels"], bias=spec["bias"],
                                                   device=device, dtype=dtype))
        super().__init__(*modules)
        self.token = spec["token"]
        if initialise:
            with torch.no_grad():
                for linear in (m for m in self if isinstance(m, nn.Linear)):
                    nn.init.normal_(linear.weight, std=0.02)
                    if linear.bias is not None:
                        nn.init.zeros_(linear.bias)

    def read(self, output: ModelOutput, input_ids: torch.Tensor | None, pad_token_id: int | None) -> torch.Tensor:
        """The vector per sequence the head classifies, where AdapterHub reads it."""
        hidden = output[0]
        if self.token == "first":
            return hidden[:, 0]
        if self.token == "pooler":
            if output.get("pooler_output") is None:
                raise AdapterError("this head reads the pooler's output (AdapterHub's use_pooler), but the "
                                   "model returned none: load the base with its pooler (add_pooling_layer)")
            return output["pooler_output"]
        if pad_token_id is None or input_ids is None:
            return hidden[:, -1]
        last = torch.ne(input_ids, pad_token_id).sum(-1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


class HeadSlot(AdapterSlot):
    """Holds the adapters' heads on the model itself; the routed adapter's head adds ``logits``."""

    refuses_rows = ("per_example_adapters does not run adapters' own heads (AdapterHub heads): run one "
                    "adapter at a time")

    def adapted_output(self, module, adapter, args, kwargs, output, norm, overwrite):  # noqa: ARG002
        return self._with_logits(module, [adapter], args, kwargs, output)

    def compose(self, module, block, args, kwargs, output, norm):  # noqa: ARG002
        """The composition's head (``copy_owner``: a Fuse's own, else its last adapter's); under a
        Parallel each copy of the batch gets its child's."""
        owner = copy_owner(block)
        keys = set(self.adapters) | set(self.fusions)
        found = [owned_key(copy_owner(o), keys) for o in (owner.children if isinstance(owner, Parallel) else [owner])]
        if not any(found):
            return output
        heads = [self.fusions[k] if k in self.fusions else self.adapters[k] for k in found if k]
        if len(heads) < len(found) or len({h[-1].out_features for h in heads}) > 1:
            raise AdapterError(f"{block!r}: under a Parallel every copy of the batch needs its own head (AdapterHub's), "
                               f"all with one number of labels; found heads {found}")
        return self._with_logits(module, heads, args, kwargs, output)

    def _with_logits(self, module, heads: list, args, kwargs, output):
        """``output`` with ``logits``: each head on its share of the rows (one share per head)."""
        if not isinstance(output, ModelOutput):
            raise AdapterError("an adapter with its own head needs the model's output as a ModelOutput, "
                               "to add its logits: call the model with return_dict=True")
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        pad = getattr(getattr(module, "config", None), "pad_token_id", None)
        size = output[0].shape[0] // len(heads)
        parts = []
        for index, head in enumerate(heads):
            features = head.read(output, input_ids, pad)[index * size:(index + 1) * size]
            parts.append(head(features.to(head[1].weight.dtype)).to(features.dtype))
        output["logits"] = torch.cat(parts)  # this call's own output
        return output

"""adaptkit: bottleneck adapters (Houlsby et al. 2019) for any HuggingFace transformers model."""

__version__ = "0.1.0"

from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_adapter, save_adapter  # noqa: E402
from .config import AdapterConfig, FusionConfig  # noqa: E402
from .errors import (  # noqa: E402
    AdapterConfigError, AdapterError, BaseModelMismatchError, CheckpointError, TargetModuleError,
)
from .adapterhub import load_adapterhub  # noqa: E402
from .hub import push_adapter  # noqa: E402
from .model import (  # noqa: E402
    active_adapter, adapters_disabled, add_adapter, delete_adapter, list_adapters, per_example_adapters,
    set_active_adapter, set_trainable_adapters, using,
)
from .pretrained import restore_adapters  # noqa: E402
from .sharding import fsdp_auto_wrap_policy  # noqa: E402
from .routing import Average, Fuse, Parallel, Stack  # noqa: E402
from .fusion import add_fusion, delete_fusion, fusion_regularization, fusion_regularization_loss  # noqa: E402
from .fusion_checkpoint import load_fusion, save_fusion  # noqa: E402
from .parallel_generate import generate_parallel  # noqa: E402
from .counting import ParameterReport, count_parameters  # noqa: E402
from .targets import REGISTRY, Site, resolve_sites  # noqa: E402

__all__ = [
    "AdapterConfig", "AdapterConfigError", "Average", "Fuse", "FusionConfig", "Parallel", "Stack",
    "add_fusion", "delete_fusion", "fusion_regularization", "fusion_regularization_loss", "load_fusion", "save_fusion", "AdapterError", "BaseModelMismatchError", "CheckpointError",
    "CONFIG_NAME", "ParameterReport", "REGISTRY", "Site", "TargetModuleError", "WEIGHTS_NAME",
    "active_adapter", "adapters_disabled", "add_adapter", "count_parameters", "delete_adapter",
    "fsdp_auto_wrap_policy", "generate_parallel", "list_adapters", "load_adapter", "load_adapterhub", "per_example_adapters", "push_adapter", "resolve_sites", "restore_adapters",
    "save_adapter",
    "set_active_adapter", "set_trainable_adapters", "using",
]

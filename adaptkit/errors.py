"""Exceptions adaptkit raises on bad input: each message names the problem and the fix."""


class AdapterError(ValueError):
    """Base class for every error adaptkit raises about user input."""


class AdapterConfigError(AdapterError):
    """An adapter configuration is invalid (unknown field, size <= 0, unknown preset...)."""


class TargetModuleError(AdapterError):
    """Adapter placement matched nothing, or only part of the model."""


class CheckpointError(AdapterError):
    """An adapter checkpoint is missing, corrupt, or does not fit the model."""


class BaseModelMismatchError(CheckpointError):
    """An adapter checkpoint was trained on a different base model."""

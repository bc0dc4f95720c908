"""Typed errors of the model layer; the HTTP layer maps them to status codes."""


class CheckpointError(ValueError):
    """A base model or BEM checkpoint that cannot be loaded as given (say what to fix)."""


class NonFiniteLogitsError(RuntimeError):
    """The model produced NaN or infinite logits; the request must fail, not return garbage."""


class PromptTooLongError(ValueError):
    """Prompt plus requested new tokens do not fit the model's context window."""


class ChatTemplateError(ValueError):
    """Messages the tokenizer's chat template cannot render (or a tokenizer without one)."""

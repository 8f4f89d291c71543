"""A fixed-size one-hot encoding of token sequences, the input of RND's networks."""

from __future__ import annotations

import torch

from banel.models.protocol import GenerativeModel
from banel.sequences import Sequences


def sequence_shape(model: GenerativeModel, max_len: int = 0, vocab_size: int = 0) -> tuple[int, int]:
    """(max_len, vocab_size) of the sequences: given, or read from a TransformerModel or CategoricalModel."""
    config = getattr(model, "config", None)
    support = getattr(model, "support", None)
    if not max_len:
        max_len = getattr(config, "max_len", 0) or (int(support.tokens.shape[1]) if support is not None else 0)
    if not vocab_size:
        vocab_size = getattr(config, "vocab_size", 0) or (
            int(support.tokens.max()) + 1 if support is not None and support.tokens.numel() else 0
        )
    if not (max_len and vocab_size):
        raise ValueError(
            f"cannot read the sequence shape of {type(model).__name__}: "
            "set method_options.max_len and method_options.vocab_size"
        )
    return max_len, vocab_size


def one_hot(x: Sequences, max_len: int, vocab_size: int) -> torch.Tensor:
    """(n, max_len * (vocab_size + 1)) float32: one token per position, symbol vocab_size past the end."""
    if len(x) and int(x.lengths.max()) > max_len:
        raise ValueError(f"a sequence is longer than max_len={max_len}")
    tokens = torch.full((len(x), max_len), vocab_size, dtype=torch.long)
    width = min(x.tokens.shape[1], max_len)
    inside = torch.arange(width).unsqueeze(0) < x.lengths.cpu().unsqueeze(1)
    tokens[:, :width] = torch.where(inside, x.tokens[:, :width].cpu(), tokens[:, :width])
    if (tokens > vocab_size).any() or (tokens < 0).any():
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    return torch.nn.functional.one_hot(tokens, vocab_size + 1).float().reshape(len(x), -1)

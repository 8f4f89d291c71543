"""A fixed-size one-hot encoding of token sequences, the input of RND's networks."""

from __future__ import annotations

import torch

from banel.models.protocol import GenerativeModel, Shaped
from banel.sequences import Sequences


def sequence_shape(model: GenerativeModel, max_len: int = 0, vocab_size: int = 0) -> tuple[int, int]:
    """(max_len, vocab_size) of the sequences: given, or read from a model that knows them (`Shaped`)."""
    if not (max_len and vocab_size) and isinstance(model, Shaped):
        known_len, known_vocab = model.sequence_shape()
        max_len, vocab_size = max_len or known_len, vocab_size or known_vocab
    if not (max_len and vocab_size):
        raise ValueError(
            f"cannot read the sequence shape of {type(model).__name__}: "
            "set rnd.max_len and rnd.vocab_size, or give the model sequence_shape()"
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

"""A batch of variable-length token sequences: the one data type every module exchanges."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sequences:
    """A batch of n token sequences, right-padded with zeros, each optionally conditioned on a context.

    `tokens` is an (n, L) int64 tensor and `lengths` an (n,) int64 tensor of content lengths; an end
    token, when a model has one, is never stored (it is implied by the length). Positions at or past
    `lengths[i]` hold 0 and carry no meaning (0 may be a real token: `lengths` is authoritative).
    `context`, for a conditional model such as a language model answering a prompt, holds each row's
    conditioning sequence (its prompt): it is part of the sample's identity (keys, hashes, ledgers), so the
    same completion to two prompts is two samples, but it is not what the sample's likelihood scores.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    context: Sequences | None = None

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2:
            raise ValueError(f"Sequences.tokens must be 2-D (n, L), got shape {tuple(self.tokens.shape)}")
        if self.lengths.shape != (self.tokens.shape[0],):
            raise ValueError(
                f"Sequences.lengths must have shape ({self.tokens.shape[0]},), got {tuple(self.lengths.shape)}"
            )
        if self.context is not None and len(self.context) != self.tokens.shape[0]:
            raise ValueError(f"Sequences.context has {len(self.context)} rows for {self.tokens.shape[0]} sequences")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __getitem__(self, index: int | slice | torch.Tensor | Sequence[int]) -> Sequences:
        """Select sequences by index, slice, boolean mask or index tensor (always returns a batch)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        elif not isinstance(index, slice | torch.Tensor):
            index = torch.as_tensor(list(index), dtype=torch.long)
        if isinstance(index, torch.Tensor):
            index = index.to(self.tokens.device)
        tokens, lengths = self.tokens[index], self.lengths[index]
        width = int(lengths.max()) if len(lengths) else 0
        context = (
            None if self.context is None else self.context[index.cpu() if isinstance(index, torch.Tensor) else index]
        )
        return Sequences(tokens[:, :width].contiguous(), lengths.contiguous(), context)

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.tokens.device

    def to(self, device: torch.device | str) -> Sequences:
        """Copy to a device (the context too)."""
        context = None if self.context is None else self.context.to(device)
        return Sequences(self.tokens.to(device), self.lengths.to(device), context)

    def with_context(self, context: Sequences | None) -> Sequences:
        """The same sequences conditioned on `context` (one row per sequence)."""
        return Sequences(self.tokens, self.lengths, context)

    @staticmethod
    def from_lists(rows: Iterable[Sequence[int]], device: torch.device | str = "cpu") -> Sequences:
        """Build a batch from lists of token ids."""
        rows = [list(map(int, r)) for r in rows]
        width = max((len(r) for r in rows), default=0)
        tokens = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        return Sequences(tokens.to(device), lengths.to(device))

    def to_lists(self) -> list[list[int]]:
        """Return the sequences as lists of token ids (padding removed)."""
        tokens, lengths = self.tokens.cpu().tolist(), self.lengths.cpu().tolist()
        return [row[:n] for row, n in zip(tokens, lengths, strict=True)]

    def keys(self) -> list[bytes]:
        """One canonical byte string per sequence, its context included (equal iff both are equal); without a
        context, the key of the tokens alone."""
        own = [b",".join(str(t).encode() for t in row) + b";" for row in self.to_lists()]
        if self.context is None:
            return own
        return [c + b"|" + k for c, k in zip(self.context.keys(), own, strict=True)]

    def hashes(self) -> list[str]:
        """A sha256 hex digest per sequence, for ledgers and de-duplication."""
        return [hashlib.sha256(k).hexdigest() for k in self.keys()]

    @staticmethod
    def cat(batches: Sequence[Sequences]) -> Sequences:
        """Concatenate batches (padding to the widest)."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return Sequences(torch.zeros((0, 0), dtype=torch.long), torch.zeros(0, dtype=torch.long))
        with_context = {b.context is not None for b in batches}
        if len(with_context) > 1:
            raise ValueError("cannot concatenate sequences with and without a context")
        width = max(b.tokens.shape[1] for b in batches)
        tokens = torch.cat([torch.nn.functional.pad(b.tokens, (0, width - b.tokens.shape[1])) for b in batches])
        context = Sequences.cat([b.context for b in batches]) if with_context == {True} else None  # type: ignore[misc]
        return Sequences(tokens, torch.cat([b.lengths for b in batches]), context)

    @staticmethod
    def empty(device: torch.device | str = "cpu") -> Sequences:
        """A batch of zero sequences."""
        return Sequences(
            torch.zeros((0, 0), dtype=torch.long, device=device),
            torch.zeros(0, dtype=torch.long, device=device),
        )


def derive_seed(seed: int, *stream: int | str) -> int:
    """A 63-bit seed derived deterministically from a root seed and a stream path (round, purpose, ...)."""
    text = ":".join([str(seed), *map(str, stream)]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)

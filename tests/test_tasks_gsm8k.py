"""GSM8K: strict answer extraction, and the task end to end on a tiny local model folder (no download)."""

import json

import pytest

from banel.cli import main
from banel.sequences import Sequences
from banel.tasks.gsm8k import extract_answer, normalise_number, reference_answer
from banel.testing import TINY_WORDS, write_tiny_lm

CASES = [
    ("Step 1: 16 - 3 - 4 = 9. Step 2: 9 * 2 = 18.\nThe answer is 18.", "18"),
    ("... so she makes $18 a day. The final answer is $18", "18"),
    ("Work: 1,000 + 800 = 1,800\n#### 1,800", "1800"),
    ("Final answer: 18.00", "18"),
    ("The answer is -3.", "-3"),
    ("First I thought the answer is 17. Checking again, the answer is 18.", "18"),  # the last marker counts
    # no explicit final-answer marker followed by a number: no answer, whatever numbers the text holds
    ("16 eggs, 3 eaten, 4 baked, 9 sold at $2: 18", None),
    ("The answer is not 18, it is something else", None),
    ("the answer is eighteen", None),
    ("Janet's ducks 18 18 18 18 18 #### ", None),
    ("", None),
]


@pytest.mark.parametrize("text,answer", CASES)
def test_the_answer_needs_an_explicit_marker_followed_by_a_number(text, answer):
    assert extract_answer(text) == answer


def test_numbers_and_reference_answers_are_normalised():
    assert normalise_number("$1,234.50") == "1234.5" and normalise_number("7.0") == "7"
    assert normalise_number("abc") is None
    assert reference_answer("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\n#### 18") == "18"
    with pytest.raises(ValueError, match="without a '#### N' line"):
        reference_answer("no marker")


WORDS = TINY_WORDS


@pytest.fixture(scope="module")
def tiny_lm_folder(tmp_path_factory):
    """A random tiny Llama with a word-level tokenizer, and a two-question GSM8K file (banel.testing)."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    return write_tiny_lm(tmp_path_factory.mktemp("gsm8k"))


def test_the_task_rewards_the_reference_answer_after_a_marker(tiny_lm_folder, cache):
    from banel.tasks import make_task
    from banel.testing import check_task

    options = {"model": str(tiny_lm_folder / "model"), "data_dir": str(tiny_lm_folder / "data"), "question": 1}
    task = make_task("gsm8k", {**options, "max_new_tokens": 6, "lora_rank": 4}, cache)
    assert task.answer == "205" and task.question == "And now?"
    prompt = task.prior().prompt.tolist()
    ids = {w: i for i, w in enumerate(WORDS)}
    x = Sequences.from_lists(
        [[ids[w] for w in text.split()] for text in ("The answer is 205", "The answer is 18", "205 205", "so")]
    ).with_context(Sequences.from_lists([prompt] * 4))
    assert task.reward(x).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert task.feasible(x).tolist() == [True, True, False, False]
    report = check_task(task, samples=300)
    assert {"Feasibility", "Decode", "Describe", "Metrics"} <= set(report["capabilities"])
    with pytest.raises(ValueError, match="question=5: the test split has 2 questions"):
        make_task("gsm8k", {**options, "question": 5}, cache)


def test_banel_runs_on_gsm8k_from_the_cli(tiny_lm_folder, tmp_path, cache):
    out = tmp_path / "run"
    argv = ["run", "gsm8k", "--out", str(out), "--quiet", "--no-plot", "--budget", "16", "--set", "m=8"]
    for pair in (
        f"task_options.model={tiny_lm_folder / 'model'}",
        f"task_options.data_dir={tiny_lm_folder / 'data'}",
        "task_options.max_new_tokens=6",
        "task_options.lora_rank=4",
        "task_options.question=1",
        "banel.filter_factor=2",
        "banel.negative_epochs=1",
        "banel.generator_epochs=1",
        "eval.samples=200",
        "eval.drift_samples=50",
        "eval.metric_samples=50",
    ):
        argv += ["--set", pair]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "gsm8k" and summary["rounds"] == 2 and not summary["success_rate_exact"]
    assert {"truncated_fraction", "stated_fraction", "infeasible_fraction"} <= set(summary["metrics"])

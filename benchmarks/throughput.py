"""Throughput of our transformer (sample with KV cache, score, train; tokens/s) and time per BaNEL round on toy1d.

Usage: python benchmarks/throughput.py [--smoke] [--threads 2] [--out benchmarks/out]
Prints a table and writes throughput.json and throughput.png under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from banel.algorithm import Banel, BanelConfig  # noqa: E402
from banel.config import from_dict  # noqa: E402
from banel.methods import Context  # noqa: E402
from banel.models.transformer import TransformerConfig, TransformerModel  # noqa: E402
from banel.oracle import BudgetedOracle  # noqa: E402
from banel.tasks import make_task, resolve_task  # noqa: E402

# (name, vocab, length, d_model, n_layer): the toy configs and MNIST-like binary images (8x8, 14x14).
CONFIGS = [
    ("toy1d d64 L2", 32, 2, 64, 2),
    ("toy d64 L16", 16, 16, 64, 2),
    ("digits8x8 d64 L64", 2, 64, 64, 2),
    ("mnist14 d64 L196", 2, 196, 64, 2),
    ("digits8x8 d128x4 L64", 2, 64, 128, 4),
]


def _timed(fn, repeat: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def measure_model(vocab: int, length: int, d: int, layers: int, smoke: bool) -> dict[str, float]:
    """Tokens/s for sampling (batch 500), scoring (batch 256) and training (batch 64) of one configuration."""
    cfg = TransformerConfig(vocab_size=vocab, max_len=length, end_token=False, d_model=d, n_layer=layers, n_head=4)
    model = TransformerModel(cfg, seed=0)
    n_sample, n_score, n_train = (100, 256, 128) if smoke else (500, 2048, 512)
    repeat = 1 if smoke else 3
    x = model.sample(n_score, seed=1)
    t_sample = _timed(lambda: model.sample(n_sample, seed=2), repeat)
    t_score = _timed(lambda: model.log_prob(x), repeat)
    t_train = _timed(lambda: model.fit(x[torch.arange(n_train)], 1, seed=3), repeat)
    return {
        "sample_tok_s": n_sample * length / t_sample,
        "score_tok_s": n_score * length / t_score,
        "train_tok_s": n_train * length / t_train,
        "params": model.num_parameters(),
    }


def measure_round(smoke: bool) -> dict[str, float]:
    """Seconds per BaNEL round on toy1d with its default settings (the prior is pre-trained first, not timed)."""
    task = make_task("toy1d")
    prior = task.prior()
    cfg = from_dict(BanelConfig, resolve_task("toy1d")[1].defaults["banel"])  # what `banel run toy1d` uses
    m = 250 if not smoke else 50
    banel = Banel(prior, cfg, Context(m=m))
    rounds = 2 if smoke else 6
    oracle = BudgetedOracle(task.reward, m * rounds)
    banel.round(oracle, 0)  # round 0 has no filtering; time the full rounds after it
    start = time.perf_counter()
    for i in range(1, rounds):
        banel.round(oracle, i)
    return {"seconds_per_round": (time.perf_counter() - start) / (rounds - 1), "m": m, "f": cfg.filter_factor}


def main() -> None:
    """Run the benchmark and write its results."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (for CI)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"threads": args.threads, "models": {}, "toy1d_round": None}
    print(f"{'config':24s} {'params':>8s} {'sample tok/s':>13s} {'score tok/s':>12s} {'train tok/s':>12s}")
    for name, vocab, length, d, layers in CONFIGS[:2] if args.smoke else CONFIGS:
        r = measure_model(vocab, length, d, layers, args.smoke)
        results["models"][name] = r
        rates = f"{r['sample_tok_s']:13,.0f} {r['score_tok_s']:12,.0f} {r['train_tok_s']:12,.0f}"
        print(f"{name:24s} {r['params']:8d} {rates}")
    rnd = measure_round(args.smoke)
    results["toy1d_round"] = rnd
    print(f"toy1d BaNEL round (m={rnd['m']}, f={rnd['f']}): {rnd['seconds_per_round']:.2f} s")
    (out / "throughput.json").write_text(json.dumps(results, indent=2))
    names = list(results["models"])
    fig, ax = plt.subplots(figsize=(8, 4))
    for k, key in enumerate(("sample_tok_s", "score_tok_s", "train_tok_s")):
        ax.bar([i + 0.27 * k for i in range(len(names))], [results["models"][n][key] for n in names], 0.27, label=key)
    ax.set_xticks([i + 0.27 for i in range(len(names))], names, rotation=20, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("tokens / s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    print(f"wrote {out / 'throughput.json'} and {out / 'throughput.png'}")


if __name__ == "__main__":
    main()

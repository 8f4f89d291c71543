"""Speed of the exact success rate (streamed logsumexp of log p(x) over the target set) at each resolution.

Prints targets/s and the projected time for 50,000 targets, and saves them to exact_rate_speed.json.
The model is the default prior architecture (d_model 64, 2 layers) with random weights: speed does not
depend on the weights. `--smoke` scores few targets (for CI).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from banel.models.transformer import TransformerConfig, TransformerModel
from banel.tasks.mnist import log_success_rate


def measure(resolution: int, n: int, device: str, repeats: int) -> dict:
    """Best-of-repeats targets/s of log_success_rate on n random binary images."""
    config = TransformerConfig(vocab_size=2, max_len=resolution**2, end_token=False, d_model=64, n_layer=2, n_head=4)
    model = TransformerModel(config, seed=0, device=device)
    targets = np.random.default_rng(0).integers(0, 2, size=(n, resolution**2), dtype=np.uint8)
    log_success_rate(model, targets[: min(n, 256)])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        log_success_rate(model, targets)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return {
        "resolution": resolution,
        "targets": n,
        "seconds": round(best, 3),
        "targets_per_second": round(n / best, 1),
        "seconds_per_50000": round(50_000 * best / n, 1),
    }


def main() -> None:
    """Measure at 8, 14 and 28 pixels a side."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--targets", type=int, nargs=3, default=[10_000, 4_000, 1_000], help="per resolution 8 14 28")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).with_name("exact_rate_speed.json")))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    counts = [200, 100, 50] if args.smoke else args.targets
    rows = []
    for resolution, n in zip((8, 14, 28), counts, strict=True):
        row = measure(resolution, n, args.device, 1 if args.smoke else args.repeats)
        rows.append(row)
        print(
            f"{resolution:2d}x{resolution:<2d}  {row['targets_per_second']:10.0f} targets/s  "
            f"-> {row['seconds_per_50000']:8.1f} s for 50,000 targets"
        )
    Path(args.out).write_text(json.dumps({"device": args.device, "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

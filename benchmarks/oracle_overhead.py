"""Cost of paying for rewards: ledger overhead per evaluation, and executor throughput on a slow oracle.

    PYTHONPATH=src python benchmarks/oracle_overhead.py            # full (about 2 minutes)
    PYTHONPATH=src python benchmarks/oracle_overhead.py --smoke    # a few seconds, for CI

1. Ledger overhead (µs per evaluation): a free reward function (first token odd) timed bare and through
   `LedgerOracle` (dedupe on, nothing repeated) on fresh samples, for one oracle call per batch and one call
   (so one commit) per sample, at SQLite synchronous=FULL (default: fsync per commit) and NORMAL.
2. Executor throughput (evaluations / s): an oracle that sleeps 50 ms per call, one sample per call, for
   the inline, thread, process and Ray executors at 1, 2 and 8 workers (Ray: a local cluster with 8
   logical CPUs); each executor first evaluates one untimed batch, then the best of 3 batches is kept, so
   pool and Ray start-up are not counted.

Writes benchmarks/out/oracle_overhead.json and .png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from banel.config import OracleConfig
from banel.oracle import Ledger, LedgerOracle
from banel.oracle.executors import make_executor
from banel.sequences import Sequences

SLEEP_S = 0.05
REPEATS = 3


def free_reward(x: Sequences) -> torch.Tensor:
    """Reward 1 iff the first token is odd: costs almost nothing, so the ledger's cost shows."""
    return (x.tokens[:, 0] % 2).double()


def sleepy_reward(x: Sequences) -> torch.Tensor:
    """A 50 ms oracle call (a stand-in for a simulation or a remote API)."""
    time.sleep(SLEEP_S)
    return (x.tokens[:, 0] % 2).double()


def fresh(n: int, offset: int) -> Sequences:
    """n distinct 3-token samples."""
    i = torch.arange(offset, offset + n)
    return Sequences(torch.stack([i % 97, (i // 97) % 97, i // 9409], 1), torch.full((n,), 3))


def ledger_overhead(n: int, repeats: int, folder: Path) -> list[dict]:
    """µs per evaluation added by the ledger, per commit pattern and durability level."""
    out = []
    for sync in ("FULL", "NORMAL"):
        for chunk in (0, 1):
            best_bare, best_ledger = float("inf"), float("inf")
            for r in range(repeats):
                x = fresh(n, offset=r * n)
                t = time.perf_counter()
                for s in range(0, n, chunk or n):
                    free_reward(x[s : s + (chunk or n)])
                best_bare = min(best_bare, time.perf_counter() - t)
                ledger = Ledger(folder / f"overhead-{sync}-{chunk}-{r}.sqlite", synchronous=sync)
                oracle = LedgerOracle(free_reward, n, ledger, "bench", "bench", OracleConfig(chunk_size=chunk))
                t = time.perf_counter()
                oracle(x)
                best_ledger = min(best_ledger, time.perf_counter() - t)
                ledger.close()
            out.append(
                {
                    "synchronous": sync,
                    "calls": "one per batch" if chunk == 0 else "one per sample",
                    "n": n,
                    "bare_us_per_eval": 1e6 * best_bare / n,
                    "ledger_us_per_eval": 1e6 * best_ledger / n,
                    "overhead_us_per_eval": 1e6 * (best_ledger - best_bare) / n,
                }
            )
            row = out[-1]
            print(
                f"ledger sync={sync:6s} {row['calls']:15s}: {row['overhead_us_per_eval']:8.1f} µs/eval "
                f"(bare {row['bare_us_per_eval']:.1f})"
            )
    return out


def throughput(n: int, workers_list: list[int], executors: list[str], folder: Path) -> list[dict]:
    """Evaluations per second of the 50 ms oracle, one sample per call."""
    out = []
    for name in executors:
        for workers in workers_list:
            if name == "inline" and workers != 1:
                continue
            config = OracleConfig(executor=name, workers=workers, chunk_size=1, dedupe=False)
            executor = make_executor(config)
            ledger = Ledger(folder / f"tp-{name}-{workers}.sqlite", synchronous="NORMAL")
            oracle = LedgerOracle(sleepy_reward, (REPEATS + 1) * n, ledger, "bench", "bench", config, executor=executor)
            oracle(fresh(n, offset=10**6))  # warm-up: Ray starts its worker processes lazily, seconds each
            wall = float("inf")
            for rep in range(REPEATS):  # best of REPEATS: start-up stragglers and a noisy shared machine
                x = fresh(n, offset=rep * n)
                t = time.perf_counter()
                r = oracle(x)
                wall = min(wall, time.perf_counter() - t)
                assert r.tolist() == free_reward(x).tolist()
            executor.close()
            ledger.close()
            out.append(
                {
                    "executor": name,
                    "workers": workers,
                    "n": n,
                    "seconds": wall,
                    "evals_per_s": n / wall,
                    "ideal_evals_per_s": workers / SLEEP_S,
                }
            )
            print(f"{name:8s} workers={workers}: {n / wall:7.1f} evals/s (ideal {workers / SLEEP_S:.0f})")
    return out


def plot(result: dict, path: Path) -> None:
    """Throughput per executor against workers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in dict.fromkeys(r["executor"] for r in result["throughput"]):
        rows = [r for r in result["throughput"] if r["executor"] == name]
        ax.plot([r["workers"] for r in rows], [r["evals_per_s"] for r in rows], "o-", label=name)
    ws = sorted({r["workers"] for r in result["throughput"]})
    ax.plot(ws, [w / SLEEP_S for w in ws], "k:", label="ideal")
    ax.set(xlabel="workers", ylabel="evaluations / s", title="50 ms oracle, one sample per call")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    """Run both measurements and save them."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, no Ray, no process pool")
    p.add_argument("--out", default=str(Path(__file__).parent / "out"), help="output folder")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    executors = ["inline", "thread"] if args.smoke else ["inline", "thread", "process", "ray"]
    if "ray" in executors:
        try:
            import ray
        except ImportError:
            executors.remove("ray")
            print("ray not installed (pip install 'banel[ray]'): skipping the Ray executor")
        else:
            ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "ledger": ledger_overhead(200 if args.smoke else 2000, 2 if args.smoke else 3, Path(tmp)),
            "throughput": throughput(8 if args.smoke else 48, [1, 2, 8], executors, Path(tmp)),
        }
    (out / "oracle_overhead.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "oracle_overhead.png")
    print(f"wrote {out / 'oracle_overhead.json'} and {out / 'oracle_overhead.png'}")


if __name__ == "__main__":
    main()

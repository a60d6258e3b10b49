"""Performance comparisons, each measured side by side in one run and printed as one line per figure:

    G1 batched_generation_speedup=7.0x target>=4x PASS
    P1 overhead_share=1.3% target<=3% PASS

`make bench` (= `python -m benchmarks`) runs them all and writes benchmarks/last.json;
`python -m benchmarks.bench_overhead` runs one; `make bench-quality` runs the time-to-quality comparison.
Tests never assert these timings (tests/test_benchmarks_smoke.py only checks the modules and helpers).
"""

BENCHES = [
    "bench_generation",  # G1 batched vs per-example generation
    "bench_overhead",  # P1 share of sweep wall time outside train steps and evals
    "bench_memory",  # P5 peak RSS growth over 20 trials in one worker; GPU: QLoRA vs bf16 LoRA peak
    "bench_sampler",  # P7 sampler + storage ms per trial at 1,000 trials (SQLite; journal, PostgreSQL)
    "bench_workers",  # P6 --workers 2 vs 1 worker on both cores; SQLite cost per trial at 1/2/4 workers
    "bench_ddp",  # P8 optimizer steps/s of one trial on 2 ranks x 1 thread vs 1 rank x 1 thread (ddp)
]
# `make bench-quality` (python -m benchmarks.quality, ~48 min): P3 time to a near-best config, harness vs
# HF hyperparameter_search, W&B-style random search and an Axolotl-style grid. It replaced P2 (the same
# enqueued trials timed against HF: it could only ever see model reloading) and the old P3 (steps a pruned
# sweep needed, which measured where the best trial happened to fall).

"""Performance comparisons, each measured side by side in one run and printed as one line per figure:

    G1 batched_generation_speedup=7.0x target>=4x PASS
    P1 overhead_share=1.3% target<=5% PASS

`make bench` (= `python -m benchmarks`) runs them all; `python -m benchmarks.bench_overhead` runs one.
Tests never assert these timings (tests/test_benchmarks_smoke.py only checks the modules and helpers).
"""

BENCHES = [
    "bench_generation",  # G1 batched vs per-example generation
    "bench_overhead",  # P1 share of sweep wall time outside train steps and evals
    "bench_vs_hf",  # P2 harness vs Trainer.hyperparameter_search(model_init) wall time
    "bench_pruning",  # P3 train steps a pruned sweep needs to get within 2% of the unpruned best
    "bench_memory",  # P5 peak RSS, 4-bit QLoRA vs fp32 LoRA
    "bench_sampler",  # P5 sampler + storage ms per trial at 1,000 trials
    "bench_workers",  # P6 --workers 2 vs 1 worker on both cores; SQLite cost per trial at 1/2/4 workers
]

"""The backbone's cache fill (frozen backbone, token summaries): rows/s in fp32, dynamic int8 and bf16, and how
close each setting's cached summaries come to fp32's, in one run on the same rows.

The fill is where a `--tune-layers 0` run on all of MovieLens spends most of its wall time (issue 20: 19 of 33
minutes). Each setting runs :func:`unictr_core.modeling.hidden_cache.build_cache` (what `unictr train` and
`unictr domain add` call; stored summaries are neither read nor written here) over the same tokenised rows,
``--repeats`` times in turn, and reports its best time::

    python benchmarks/bench_fill.py --data /tmp/unictr-bench/movielens-genre --rows 1024 --threads 2

int8 is PyTorch's dynamic quantization of the backbone's linear layers (what `unictr predict --quantize int8`
serves with); bf16 is autocast (native only on CPUs with AVX512-BF16/AMX, emulated elsewhere).
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup(args):
    from unictr_core.config import ModelConfig
    from unictr_core.data.dataset import load_dataset, subsample_per_domain
    from unictr_core.fit.training import build_model
    from unictr_core.modeling.predict import tokenize_samples
    from unictr_core.store.registry import templates_for

    dataset = load_dataset(args.data)
    rows = subsample_per_domain(dataset.train, None, 0)[: args.rows]
    domains = sorted({s.domain for s in rows})
    config = ModelConfig(backbone=args.backbone, tune_layers=0, token_summary=args.token_summary,
                         max_length=args.max_length)
    model = build_model(config, domains, templates_for(domains, default=dataset.template), seed=0)
    return model, tokenize_samples(model, rows)


def fill(model, encoded, precision: str):
    from unictr_core.config import TrainConfig
    from unictr_core.modeling.hidden_cache import build_cache

    config = TrainConfig(precision=precision, reuse_states=False, cache_dtype="fp32")
    started = time.perf_counter()
    cache = build_cache(model, encoded, model.read_layers(), config=config, head_inputs=True)
    return time.perf_counter() - started, cache.segments[0].float()


def main(argv=None) -> list[list]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a dataset folder (its training rows are read)")
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--token-summary", type=int, default=8)
    parser.add_argument("--settings", default="fp32,int8", help="comma-separated: fp32, int8, bf16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from unictr_core.data.tables import format_table
    from unictr_core.modeling.precision import quantize_int8

    torch.set_num_threads(args.threads)
    model, encoded = setup(args)
    models = {}
    for setting in args.settings.split(","):
        models[setting] = copy.deepcopy(model) if setting == "int8" else model
        if setting == "int8":
            quantize_int8(models[setting])
    tokens = sum(len(t) for t in encoded.token_ids)
    best: dict[str, float] = {}
    states: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for setting, m in models.items():
            seconds, cached = fill(m, encoded, "bf16" if setting == "bf16" else "fp32")
            best[setting] = min(best.get(setting, float("inf")), seconds)
            states[setting] = cached
    reference = states.get("fp32")
    rows = []
    for setting, seconds in best.items():
        row = [setting, len(encoded), round(len(encoded) / seconds, 1), round(tokens / seconds),
               f"{best.get('fp32', seconds) / seconds:.2f}x"]
        if reference is not None:
            diff = (states[setting] - reference).norm(dim=-1) / reference.norm(dim=-1).clamp_min(1e-12)
            cosine = torch.nn.functional.cosine_similarity(states[setting], reference, dim=-1)
            row += [f"{diff.mean().item():.2e}", f"{diff.max().item():.2e}", f"{cosine.min().item():.5f}"]
        rows.append(row)
    print(f"{platform.processor() or platform.machine()}; {torch.get_num_threads()} torch thread(s); "
          f"{args.backbone}, {tokens / len(encoded):.1f} tokens/row, K={args.token_summary}; best of {args.repeats}")
    print(format_table(["setting", "rows", "rows/s", "tokens/s", "vs fp32", "rel. error (mean)", "rel. error (max)",
                        "cosine (min)"], rows))
    return rows


if __name__ == "__main__":
    main()

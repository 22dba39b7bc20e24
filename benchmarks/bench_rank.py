"""Ranking N candidates for one user: prefix key/value reuse against scoring every row on its own, same run.

    python benchmarks/bench_rank.py --backbone smollm2 --candidates 100
    python benchmarks/bench_rank.py --home HOME --candidates 100     # a trained home's model

The user (the one with the longest history in a domain of the built-in synthetic data) and the candidates (that
domain's items, then other domains' items) come from :func:`unictr_core.data.synthetic.generate`. With ``--backbone`` the model is the
backbone with fresh (random) heads: the speed and the equality of the probabilities do not depend on training.
The model is prepared as `unictr predict` prepares it (LoRA merged, weights in ``--precision``).

Modes, alternating ``--repeats`` times (the fastest round of each is reported; a shared CPU's speed drifts):

* ``rows in batches``: every candidate's whole prompt, in batches of ``--batch-size`` (what `unictr predict`
  and ``/v1/predict`` do with the same rows; the reference);
* ``prefix reuse``: `unictr rank` / ``/v1/rank``: the shared prompt prefix once, then each candidate's own
  tokens on a copy of its key/value cache (decoders only; an encoder falls back to the batches).

max |Δp|: the largest difference in probability against the reference.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unictr_core.config import DEFAULT_PRECISION, PRECISIONS  # noqa: E402 - after the path setup


def user_and_candidates(domain: str, count: int, history: int = 0) -> tuple[dict, list[dict]]:
    """The user with the longest history in ``domain`` and ``count`` distinct items (that domain's first, then
    other domains' items, scored as items of ``domain``); ``history`` > 0: the user's history is made that long
    (earlier items of the data in front of the user's own)."""
    from unictr_core.data.synthetic import generate

    rows = generate(seed=0, scale=1.0)
    user = max((s for s in rows if s.domain == domain), key=lambda s: (len(s.history), s.user_id))
    items: dict[str, dict] = {}
    for s in sorted(rows, key=lambda s: s.domain != domain):
        items.setdefault(s.item_id, {k: v for k, v in s.to_dict().items() if k in ("item_id", "title", "brand",
                                                                                  "price")})
    if len(items) < count:
        raise SystemExit(f"the synthetic data has only {len(items)} items; ask for fewer --candidates")
    titles = list(user.history)
    if history > len(titles):
        others = [item["title"] for item in items.values() if item.get("title") and item["title"] not in titles]
        titles = others[: history - len(titles)] + titles
    context = {"domain": domain, "user_id": user.user_id, "history": titles}
    return context, list(items.values())[:count]


def load(args):
    from unictr_core.modeling.fast_path import prepare_for_prediction

    if args.home is not None:
        from unictr_core.workflows import serving_model

        model, _ = serving_model(args.home, [args.domain], args.precision)
        return model
    from unictr_core.config import ModelConfig
    from unictr_core.modeling.backbone import load_backbone
    from unictr_core.modeling.model import UniCTRModel

    config = ModelConfig(backbone=args.backbone, **({} if args.max_length is None else {"max_length": args.max_length}))
    model = UniCTRModel(load_backbone(args.backbone), config, domains=(args.domain,))
    return prepare_for_prediction(model, args.precision)


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2", help="a backbone with fresh heads (ignored with --home)")
    parser.add_argument("--home", type=Path, default=None, help="a trained home instead of --backbone")
    parser.add_argument("--domain", default="books")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--history", type=int, default=0, help="make the user's history this many items long "
                        "(default: the user's own, 5 items)")
    parser.add_argument("--max-length", type=int, default=None, help="prompt tokens of the --backbone model "
                        "(default: ModelConfig's, 128)")
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from unictr_core.data.tables import format_table
    from unictr_core.modeling.rank import candidate_samples, rank_samples

    model = load(args)
    user, items = user_and_candidates(args.domain, args.candidates, args.history)
    samples = candidate_samples(user, items)
    rank_samples(model, samples[:4], args.batch_size)  # warm-up, untimed
    rounds: dict[str, list[float]] = {"rows in batches": [], "prefix reuse": []}
    results = {}
    for _ in range(args.repeats):
        for mode, reuse in (("rows in batches", False), ("prefix reuse", True)):
            seconds, results[mode] = timed(lambda: rank_samples(model, samples, args.batch_size, reuse))
            rounds[mode].append(seconds)
    reference = results["rows in batches"]
    reuse = results["prefix reuse"]
    best = {mode: min(values) for mode, values in rounds.items()}
    print(f"{args.home or args.backbone} ({'decoder' if model.backbone_info.is_decoder else 'encoder'}, "
          f"{model.num_layers} layers, max length {model.config.max_length}), precision {args.precision}, LoRA "
          f"merged; {args.candidates} candidates "
          f"for one user ({len(user['history'])} history items), batch {args.batch_size}, {args.threads} torch "
          f"thread(s); {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs: timings are noisy)")
    print(f"prompt tokens: {reference.prompt_tokens} in all, {reference.prompt_tokens / len(samples):.1f} per "
          f"candidate; shared prefix {reuse.shared_prefix_tokens} tokens ({reuse.note})")
    print(f"best of {args.repeats} alternating rounds; seconds of every round: "
          + "; ".join(f"{mode} " + ", ".join(f"{v:.2f}" for v in values) for mode, values in rounds.items()))
    rows = []
    for mode in rounds:
        delta = float(np.abs(results[mode].predictions.probs - reference.predictions.probs).max())
        rows.append([mode, round(best[mode], 3), round(args.candidates / best[mode], 1),
                     f"{best['rows in batches'] / best[mode]:.2f}x", f"{delta:.1e}",
                     results[mode].order[:5] == reference.order[:5]])
    print(format_table(["mode", "seconds", "candidates/s", "speed-up", "max |Δp|", "same top 5"], rows))
    return {"rounds": rounds, "shared_prefix_tokens": reuse.shared_prefix_tokens,
            "prompt_tokens": reference.prompt_tokens}


if __name__ == "__main__":
    main()

"""Build the ``movielens`` DSN bundle of this package against a given UniCTR core.

Run it from the source tree before packaging (``pip install .`` / building a
wheel then ships the bundle)::

    python build_bundle.py --home PATH/TO/unictr-home --data DATASET_OR_FILE [--epochs 5]

``--data`` is a dataset folder (e.g. from ``unictr data prepare movielens``) or a
.jsonl/.csv file; every row is taken as domain ``movielens``. The DSN is trained
against the frozen core of ``--home`` (hidden states cached, see
``unictr_core.fit.domain_training``) and written, atomically, to
``src/unictr_domain_movielens/bundles/<core fingerprint[:16]>/movielens/``.
Run it once per core you want to support; the plugin registers them all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))

from unictr_core import DomainAddOptions, DomainData, TrainConfig, workflows  # noqa: E402
from unictr_core.store.artifact import save_domain_bundle  # noqa: E402
from unictr_domain_movielens import BUNDLES_DIR, DOMAIN, definition  # noqa: E402


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="UniCTR home whose core the DSN is built for")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder or .jsonl/.csv file")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BUNDLES_DIR, help="bundles folder (default: the package's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    # the same steps as `unictr domain add`, but the bundle goes into this package instead of the home
    prompt, description = definition()
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=3, seed=args.seed, precision="fp32")
    plan = workflows.plan_domain_add(args.home, DOMAIN, DomainData(args.data, all_rows=True), config, prompt,
                                     replace=True)
    for note in plan.notes:
        print(note)
    result = workflows.train_dsn(plan, config, DomainAddOptions(progress=not args.quiet))
    fingerprint = plan.core_fingerprint
    target = args.out / fingerprint[:16] / DOMAIN
    save_domain_bundle(plan.model, DOMAIN, target, fingerprint, result.metrics(),
                       extra={"description": description, "training": {"data": str(args.data), "rows": result.rows}})
    print(f"held-out AUC {result.test['auc']:.4f} (general network zero-shot {result.test['general_auc']:.4f}); "
          f"bundle for core {fingerprint[:12]} written to {target}")
    return target


if __name__ == "__main__":
    main()

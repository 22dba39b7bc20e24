"""Adapters: turn raw public data files into UniCTR dataset folders.

Each adapter reads one public data set in its original form, validates it
(errors name the file, line and field), builds :class:`~unictr_core.data.schema.Sample`
rows (time-ordered histories, time-based split per domain) and writes a dataset
folder with :func:`unictr_core.data.dataset.write_dataset`.

* :func:`prepare_amazon2018` -- Amazon Review Data 2018 (per-category review files
  plus optional ``meta_<Category>.json.gz``).
* :func:`prepare_movielens` -- MovieLens 100K atomic files (``ml-100k.inter``,
  ``.item``, ``.user``).

Both return a :class:`PrepareReport` with per-domain counts for the CLI summary.
"""

from __future__ import annotations

from unictr_core.adapters.common import (DomainReport, PrepareReport, build_report, drop_duplicates,  # noqa: F401
                                         snake_case)


def __getattr__(name: str):
    # Lazy so that importing the helpers above does not import every adapter.
    if name == "prepare_amazon2018":
        from unictr_core.adapters.amazon2018 import prepare_amazon2018
        return prepare_amazon2018
    if name == "prepare_movielens":
        from unictr_core.adapters.movielens import prepare_movielens
        return prepare_movielens
    raise AttributeError(name)


__all__ = ["snake_case", "drop_duplicates", "DomainReport", "PrepareReport", "build_report",
           "prepare_amazon2018", "prepare_movielens"]

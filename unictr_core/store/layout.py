"""What a UniCTR home looks like: its folder and file names, where it is, and the error for a home that breaks them.

Layout of a home (``--home`` / ``UNICTR_HOME``); :mod:`unictr_core.store.snapshots` adds the snapshot
machinery around it (``current``, ``generations/``, ``.lock``)::

    home/
      core/
        manifest.yaml       format version, backbone reference + SHA-256 of its weights, tokenizer,
                            architecture, default prompt template, fingerprint of the core
        core.safetensors    LoRA weights + general network
      domains/
        <name>/
          domain.yaml       name, prompt template, core fingerprint it was trained against, metrics
          dsn.safetensors   the domain's DSN weights
"""

from __future__ import annotations

import os
from pathlib import Path

FORMAT_VERSION = 1
CORE_DIR = "core"
DOMAINS_DIR = "domains"
MANIFEST = "manifest.yaml"
CORE_WEIGHTS = "core.safetensors"
DOMAIN_FILE = "domain.yaml"
DSN_WEIGHTS = "dsn.safetensors"
HOME_ENV = "UNICTR_HOME"


class ArtifactError(RuntimeError):
    """A core or bundle that is missing, malformed, tampered with, or of another core."""


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV, "unictr-home")).expanduser()

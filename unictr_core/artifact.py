"""Former path of the core and bundle files, now in :mod:`unictr_core.store` (kept for imports of earlier
releases and the README's Python API)."""

from unictr_core.data.files import file_sha256  # noqa: F401
from unictr_core.store.artifact import (load_core, load_domain_bundle, read_safetensors, save_core,  # noqa: F401
                                        save_domain_bundle)
from unictr_core.store.layout import (CORE_DIR, CORE_WEIGHTS, DOMAIN_FILE, DOMAINS_DIR, DSN_WEIGHTS,  # noqa: F401
                                      FORMAT_VERSION, HOME_ENV, MANIFEST, ArtifactError, default_home)
from unictr_core.store.records import (fingerprint_of, read_domain_record, read_manifest,  # noqa: F401
                                       verified_weights, verify_domain_bundle)
from unictr_core.store.writes import save_trained  # noqa: F401

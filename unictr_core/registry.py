"""Former path of the domain registry, now :mod:`unictr_core.store.registry` with its loading and writes
(kept for imports of earlier releases; the README names ``unictr_core.registry.state_token``)."""

from unictr_core.store.loading import load_model  # noqa: F401
from unictr_core.store.registry import (DomainEntry, Registry, RegistryError, core_fingerprint_of,  # noqa: F401
                                        state_token, templates_for)
from unictr_core.store.writes import commit_bundle, registry_lock, removable_entry, delete_bundle  # noqa: F401

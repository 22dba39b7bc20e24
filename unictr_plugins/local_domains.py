"""Built-in domain plugin: the bundles in ``<home>/domains/`` and the shipped domain definitions.

A bundle folder ``<home>/domains/<name>/`` (``domain.yaml`` + ``dsn.safetensors``;
``home`` is the snapshot the registry resolved) is registered with the core fingerprint it records
(a folder that is a symbolic link is registered too, and the registry lists it broken); a shipped definition
(``unictr_domains/<name>.yaml``) is registered as a template without a DSN, so
such a domain is known (and predicted zero-shot) before any DSN exists for it.
Folders whose name starts with a dot are temporary (writes in progress) and skipped.
"""

from __future__ import annotations

from pathlib import Path

from unictr_core.data.domain_defs import shipped_definitions
from unictr_core.hookspecs import hookimpl
from unictr_core.plugins import DomainSpec
from unictr_core.store.layout import DOMAINS_DIR
from unictr_core.store.records import read_domain_record


@hookimpl
def register_domains(register, home):
    for definition in shipped_definitions().values():
        register(DomainSpec(name=definition.name, template=definition.template,
                            description=definition.description, source="shipped definition"))
    root = Path(home) / DOMAINS_DIR
    if not root.is_dir():
        return
    for bundle in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            fingerprint = read_domain_record(bundle).get("core_fingerprint")
        except Exception:  # noqa: BLE001 - never let one bundle hide the others: the registry reports what is wrong
            fingerprint = None
        register(DomainSpec(name=bundle.name, bundle=bundle, core_fingerprint=fingerprint))

"""UniCTR plugin: the ``movielens`` domain (an example of a third-party domain package).

The package ships the domain's prompt template and, in ``bundles/``, DSN bundles
built by ``build_bundle.py`` (in the source tree) against particular cores:
``bundles/<core fingerprint, 16 hex digits>/movielens/{domain.yaml,dsn.safetensors}``.
A DSN only works with the exact core it was trained against, so the package
registers every bundle it has with its core fingerprint and lets the UniCTR
registry pick the one that fits the user's core. With no fitting bundle the
domain is still known: it is predicted zero-shot by the general network with
this template, and ``unictr domain add movielens --data ...`` trains a local DSN
for the user's own core with the same template.
"""

from __future__ import annotations

from pathlib import Path

from unictr_core import ArtifactError, DomainSpec, PromptTemplate, hookimpl, read_domain_record, read_template_file

DOMAIN = "movielens"
PACKAGE_DIR = Path(__file__).resolve().parent
DEFINITION = PACKAGE_DIR / "template.yaml"  # name, description and prompt template of the domain
BUNDLES_DIR = PACKAGE_DIR / "bundles"


def definition() -> tuple[PromptTemplate, str]:
    """The domain's prompt template and description, read from its definition file."""
    return read_template_file(DEFINITION, DOMAIN)


def template() -> PromptTemplate:
    return definition()[0]


def shipped_bundles() -> list[Path]:
    return sorted(p for p in BUNDLES_DIR.glob(f"*/{DOMAIN}") if (p / "domain.yaml").is_file())


@hookimpl
def register_domains(register, home):
    # `home` (the snapshot of the UniCTR home being read) is not needed: this package's bundles live in
    # the package, and the registry matches each one's core fingerprint against the home's core
    prompt, description = definition()
    bundles = shipped_bundles()
    if not bundles:
        register(DomainSpec(name=DOMAIN, template=prompt, description=description))
    for bundle in bundles:
        try:
            fingerprint = read_domain_record(bundle).get("core_fingerprint")
        except ArtifactError:
            fingerprint = None  # the registry reports the broken bundle
        register(DomainSpec(name=DOMAIN, template=prompt, bundle=bundle, core_fingerprint=fingerprint,
                            description=description))

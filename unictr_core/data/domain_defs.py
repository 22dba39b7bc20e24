"""Shipped domain definitions: the prompt template and description of known domains.

They live in the repository's top-level ``domains/`` folder (installed as the
package ``unictr_domains``), one ``<name>.yaml`` each::

    name: gift_cards
    description: Amazon Review Data 2018, Gift Cards
    template:            # a PromptTemplate mapping (see unictr_core.data.prompts)
      display_name: Gift Cards
      parts: [...]
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from unictr_core.data import yaml_io
from unictr_core.data.prompts import PromptTemplate, template_from_data


@dataclass
class DomainDefinition:
    name: str
    description: str
    template: PromptTemplate
    path: Path


def definitions_dir() -> Path:
    spec = importlib.util.find_spec("unictr_domains")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the package unictr_domains (shipped domain definitions) is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def read_definition(path: Path) -> DomainDefinition:
    data = yaml_io.read_file(path, "domain definition")
    if not isinstance(data, dict) or "name" not in data:
        raise ValueError(f"{path}: expected a mapping with 'name', 'description' and 'template'")
    template, description = template_from_data(dict(data, template=data.get("template") or {}), str(data["name"]),
                                               str(path))
    return DomainDefinition(name=str(data["name"]), description=description, template=template, path=Path(path))


def shipped_definitions() -> dict[str, DomainDefinition]:
    out = {}
    for path in sorted(definitions_dir().glob("*.yaml")):
        definition = read_definition(path)
        out[definition.name] = definition
    return out

"""Plugin hook specifications (pluggy project name ``unictr``).

In the style of Simon Willison's ``llm``: every hook receives a ``register``
callback and calls it once per thing it provides. Built-in plugins in
``unictr_plugins`` implement these hooks exactly like third-party packages,
which are found through the entry-point group ``unictr``.

A hook implementation may leave out arguments it does not need (pluggy passes
only the ones it names): ``def register_domains(register):`` is fine.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("unictr")
hookimpl = pluggy.HookimplMarker("unictr")


@hookspec
def register_backbones(register):
    """Register language-model backbones.

    Call ``register(spec)`` with a :class:`unictr_core.plugins.BackboneSpec`
    (name and how to locate a local Hugging Face model directory) for every
    backbone this plugin provides.
    """


@hookspec
def register_domains(register, home):
    """Register domains.

    Call ``register(spec)`` with a :class:`unictr_core.plugins.DomainSpec`
    (name, prompt template, location of the DSN bundle, the core fingerprint
    it was trained against) for every domain this plugin provides. ``home`` is
    the snapshot of the UniCTR home being read (a :class:`pathlib.Path` holding
    its ``core/`` and ``domains/``; it may not exist yet): read only below it, so
    that everything registered comes from one consistent state.
    A package may register several bundles of one domain, one per core it was
    built for; the registry picks the one that fits the current core.
    """


@hookspec
def register_baselines(register):
    """Register baseline CTR models (for ``unictr benchmark``).

    Call ``register(name, factory)``; ``factory(**kwargs)`` builds the model.
    """

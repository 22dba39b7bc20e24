"""Everything about a home: its layout, the snapshots and lock, core and bundle files, the domain registry.

Modules, lowest first (each imports only those above it):

- :mod:`~unictr_core.store.layout`: names of the home's folders and files, where a home is, ``ArtifactError``
- :mod:`~unictr_core.store.snapshots`: immutable generations switched by one atomic pointer; the writers' lock
- :mod:`~unictr_core.store.records`: the YAML records (manifest, ``domain.yaml``) read and checked, no torch
- :mod:`~unictr_core.store.registry`: every domain the plugins register, resolved against the current core
- :mod:`~unictr_core.store.artifact`: core and bundle weights saved and loaded (safetensors, torch)
- :mod:`~unictr_core.store.loading`: a model from a home (its core + every compatible DSN)
- :mod:`~unictr_core.store.writes`: train's write, commit and remove of a bundle, each one snapshot switch
"""

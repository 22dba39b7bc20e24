"""Former path of :mod:`unictr_core.store.snapshots` (kept for imports of earlier releases)."""

from unictr_core.store.snapshots import *  # noqa: F401,F403
from unictr_core.store.snapshots import HomeStoreError, lock, recover, snapshot, state_token, step, transaction  # noqa: F401

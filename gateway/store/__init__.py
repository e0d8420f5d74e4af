"""Session store: web events and identity links. One interface, two implementations.

- `SqliteStore` (embedded default): one file, WAL mode, synchronous=FULL, so an acknowledged write
  survives a crash or restart of the gateway; its embedding cache is in memory.
- `RedisStore`: for deployments with several gateway replicas sharing one store: one Redis
  (`redis://`) or a Redis Cluster (`redis+cluster://host:port[,host:port]`, every key hash-tagged by visitor
  or customer, every script in one slot).

Every id a store holds is a pseudonym (gateway/privacy.py); ForgetCustomer leaves a tombstone that refuses
late events and links; `prune` is retention (gateway/retention.py).

Both pass tests/integration/test_store_conformance.py (SQLite, Redis and a 3-node Redis Cluster).
"""

from gateway.store.base import (
    Appended,
    Forgot,
    Forgotten,
    Link,
    Pruned,
    SessionStore,
    StoreLimits,
    StoreUnavailable,
    open_store,
    pack_cache_entry,
    unpack_cache_entry,
)

__all__ = ["Appended", "Forgot", "Forgotten", "Link", "Pruned", "SessionStore", "StoreLimits", "StoreUnavailable",
           "open_store", "pack_cache_entry", "unpack_cache_entry"]

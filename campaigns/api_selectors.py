"""Reads of the REST API's own records: API keys by secret, through Django's cache.

The cache is shared by every server process when CACHE_URL (or a Redis broker) is set, as in
production: revoking a key deletes its entry, so the next request in any process reads the
database and is refused. Unknown secrets are never cached, so guessing fills no memory.
"""

from __future__ import annotations

import hashlib

from django.core.cache import cache

from campaigns.models import ApiKey

# How long an active key is trusted without reading the database. Revocation and every save of
# a key delete the entry at once; this bounds only a change made behind the ORM's back.
API_KEY_CACHE_SECONDS = 60


def api_key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_cache_key(secret_hash: str) -> str:
    return f"campaigns:api_key:v2:{secret_hash}"


def api_key_by_secret(*, secret: str) -> ApiKey | None:
    """The active key with this secret, from the cache when it was seen recently."""
    digest = api_key_hash(secret)
    api_key = cache.get(api_key_cache_key(digest))
    if api_key is None:
        api_key = ApiKey.objects.filter(secret_hash=digest, is_active=True).first()
        if api_key is not None:
            cache.set(api_key_cache_key(digest), api_key, API_KEY_CACHE_SECONDS)
    return api_key


def api_key_forget(*, secret_hash: str) -> None:
    """Drop a key from the cache, so that every process reads it afresh."""
    cache.delete(api_key_cache_key(secret_hash))

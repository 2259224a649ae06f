"""API keys for the services that call the REST API. The secret exists only in the return
value of `api_key_create`; the database keeps its SHA-256."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from django.core.cache import cache
from django.core.exceptions import ValidationError

from campaigns.models import ApiKey, ApiScope
from campaigns.selectors import api_key_cache_key, api_key_hash


def api_key_create(*, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """Create a key; returns it and its secret (show the secret once, it is not stored)."""
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in ApiScope.values]
    if unknown:
        raise ValidationError(
            {"scopes": f"Unknown scope(s) {unknown}; choose from {list(ApiScope.values)}."}
        )
    prefix = secrets.token_hex(4)
    secret = f"ipk_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey(name=name, prefix=prefix, secret_hash=api_key_hash(secret), scopes=scopes)
    api_key.full_clean()
    api_key.save()
    return api_key, secret


def api_key_revoke(*, api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk).update(is_active=False)
    api_key.is_active = False
    cache.delete(api_key_cache_key(api_key.secret_hash))

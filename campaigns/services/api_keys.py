"""API keys for the services that call the REST API. The secret exists only in the return
value of `api_key_create`; the database keeps its SHA-256.

Every key belongs to a consumer (one push system, say): leases are held by the consumer, so
only its keys may report events for the messages it leased, and a rotated key keeps them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction

from campaigns.api_selectors import api_key_forget, api_key_hash
from campaigns.models import ApiConsumer, ApiKey, ApiScope


def api_key_create(
    *, name: str, scopes: Iterable[str], consumer: ApiConsumer | str | None = None
) -> tuple[ApiKey, str]:
    """Create a key; returns it and its secret (show the secret once, it is not stored).

    `consumer`: the consumer the key belongs to, or its name (created when new); by default the
    consumer named like the key.
    """
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in ApiScope.values]
    if unknown:
        raise ValidationError(
            {"scopes": f"Unknown scope(s) {unknown}; choose from {list(ApiScope.values)}."}
        )
    consumer_name = consumer.name if isinstance(consumer, ApiConsumer) else (consumer or name)
    if not consumer_name.strip():
        raise ValidationError({"consumer": "A key needs a consumer name (or a key name)."})
    prefix = secrets.token_hex(4)
    secret = f"ipk_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():  # a key that fails validation leaves no new consumer behind
        if not isinstance(consumer, ApiConsumer):
            consumer, _ = ApiConsumer.objects.get_or_create(name=consumer_name.strip())
        api_key = ApiKey(
            name=name,
            consumer=consumer,
            prefix=prefix,
            secret_hash=api_key_hash(secret),
            scopes=scopes,
        )
        api_key.full_clean()
        api_key.save()
    return api_key, secret


def api_key_revoke(*, api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk).update(is_active=False)
    api_key.is_active = False
    api_key_forget(secret_hash=api_key.secret_hash)

"""API key authentication, scope permission and per-key throttling for the REST API.

Clients send `Authorization: Api-Key <secret>`. A missing or unknown key is 401; a key without
the view's `required_scope` is 403. Scopes: `push` reads messages to send and writes delivery
events; `ops` reads everything (so an ops key passes any read-only request).
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.core.cache import cache
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from campaigns.api_selectors import API_KEY_CACHE_SECONDS, api_key_by_secret, api_key_cache_key
from campaigns.models import ApiKey, ApiScope

KEYWORD = "Api-Key"
# Recording every request's time would write on every read; once a minute is plenty.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyPrincipal:
    """`request.user` of a key-authenticated request: authenticated, never staff."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.username = f"api-key:{api_key.name}"

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None  # no key: the permission check answers 401
        if len(parts) != 2:
            raise AuthenticationFailed(
                f"Malformed Authorization header; send 'Authorization: {KEYWORD} <secret>'."
            )
        try:
            secret = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise AuthenticationFailed("Invalid API key.") from exc
        api_key = api_key_by_secret(secret=secret)
        if api_key is None:
            raise AuthenticationFailed("Invalid or revoked API key.")
        _touch(api_key)
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        # A WWW-Authenticate value makes DRF answer 401 (not 403) to unauthenticated requests.
        return KEYWORD


def _touch(api_key: ApiKey) -> None:
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
        cache.set(api_key_cache_key(api_key.secret_hash), api_key, API_KEY_CACHE_SECONDS)


class HasScope(BasePermission):
    """Allows a request whose key holds the view's `required_scope` ("push" or "ops")."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request: Request, view: object) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return False
        required = getattr(view, "required_scope", ApiScope.OPS)
        if api_key.has_scope(required):
            return True
        if request.method in SAFE_METHODS and api_key.has_scope(ApiScope.OPS):
            return True
        self.message = f"This API key lacks the '{required}' scope this endpoint needs."
        return False


class ApiKeyRateThrottle(BaseThrottle):
    """A fixed-window request counter per API key in Django's cache.

    The rate is REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["api_key"] (e.g. "6000/min"; None turns
    throttling off), DEFAULT_RATE when unset. One cache counter per window keeps each check
    O(1), where DRF's SimpleRateThrottle stores and rewrites a list of every request time.
    The counter lives in the shared cache (Redis, settings.CACHES) when one is configured, so
    the limit holds across all server processes; only the embedded default keeps it per process.
    """

    scope = "api_key"
    DEFAULT_RATE = "6000/min"
    PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def rate(self) -> str | None:
        rates = api_settings.DEFAULT_THROTTLE_RATES or {}
        return rates.get(self.scope, self.DEFAULT_RATE)

    def allow_request(self, request: Request, view: object) -> bool:
        rate = self.rate()
        if rate is None or not isinstance(request.auth, ApiKey):
            return True
        count, period = rate.split("/")
        allowed, seconds = int(count), self.PERIODS[period[0]]
        now = time.time()
        window = int(now // seconds)
        key = f"throttle:{self.scope}:{request.auth.pk}:{window}"
        cache.add(key, 0, seconds + 1)
        try:
            used = cache.incr(key)
        except ValueError:  # the entry expired between add and incr
            cache.set(key, 1, seconds + 1)
            used = 1
        self.retry_after = (window + 1) * seconds - now
        return used <= allowed

    def wait(self) -> float | None:
        return self.retry_after


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes ApiKeyAuthentication in the OpenAPI schema."""

    target_class = "campaigns.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: object) -> dict:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": f"`{KEYWORD} <secret>`; keys are created in the admin.",
        }

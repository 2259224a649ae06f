"""The JSON API answers in JSON also when something fails outside a view's own handling.

A backing service that is down (database, cache) gives a 503 with Retry-After, any other
unhandled error a 500; both as `{"detail": ...}`, never Django's HTML page or a traceback.
The error is still logged in full.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from incentive_platform.outages import RETRY_AFTER_SECONDS, outage_of

logger = logging.getLogger(__name__)

API_PREFIXES = ("/api/",)


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIXES):
            return None  # the admin keeps Django's own error pages
        outage = outage_of(exception)
        if outage is not None:
            logger.error("%s %s: %s", request.method, request.path, outage.sentence())
            return JsonResponse(
                {
                    "detail": f"Service unavailable: the {outage.service} cannot be reached. "
                    f"Retry in {RETRY_AFTER_SECONDS} seconds."
                },
                status=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        logger.exception("%s %s failed", request.method, request.path)
        return JsonResponse({"detail": "Internal server error; it has been logged."}, status=500)

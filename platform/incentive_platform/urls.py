"""URL routes: `/` (to the admin), the admin, the REST API under /api/v1/, the OpenAPI schema
and its two readers (Swagger UI and Redoc, served from the app's own static files), the probes.

The schema and the readers are public on purpose (README, "The push API"): they describe shapes
only, and every operation they describe needs a key. The probes need none either.
"""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from incentive_platform import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/schema/swagger/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger"),
    path(
        "api/schema/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="api_docs/redoc.html"),
        name="redoc",
    ),
    path("api/v1/", include("incentive_platform.api_urls")),
]

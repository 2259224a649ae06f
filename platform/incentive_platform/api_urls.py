"""Every app's API routes, mounted under /api/v1/. Each app owns its `api_urls.py`."""

from django.urls import include, path

urlpatterns = [
    path("", include("campaigns.api_urls")),
    path("", include("abtest.api_urls")),
]

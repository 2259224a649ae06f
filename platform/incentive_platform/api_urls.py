"""Every app's API routes, mounted under /api/v1/. Each app owns its `api_urls.py`."""

from importlib.util import find_spec

from django.urls import include, path

urlpatterns = [
    path("", include(f"{app}.api_urls"))
    for app in ("predictor", "campaigns", "abtest")
    if find_spec(f"{app}.api_urls") is not None
]

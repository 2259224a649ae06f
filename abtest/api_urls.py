"""A/B module routes under /api/v1/."""

from django.urls import path

from abtest.api import ExperimentReportApi

urlpatterns = [
    path(
        "experiments/<slug:key>/report",
        ExperimentReportApi.as_view(),
        name="experiment-report",
    ),
]

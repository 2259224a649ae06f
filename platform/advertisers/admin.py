"""Admin for scenarios, advertisers and daily stats, with the data upload page for ops staff.

Daily stats are read-only here: they change only through ingestion, whose upload page (linked
from the three change lists) runs the same checks and loader as `manage.py ingest` and shows the
same problem lines. Uploading needs the `advertisers.add_dailystat` permission.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from advertisers.forms import DataUploadForm
from advertisers.ingestion import IngestError, ingest_files
from advertisers.models import Advertiser, DailyStat, Scenario

UPLOAD_PERMISSION = "advertisers.add_dailystat"


class UploadLinkMixin:
    """Adds an "Upload data files" button to the change list of users who may upload."""

    change_list_template = "advertisers/admin/change_list_with_upload.html"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        context = {
            "can_upload_data": request.user.has_perm(UPLOAD_PERMISSION),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)  # type: ignore[misc]


@admin.register(Scenario)
class ScenarioAdmin(UploadLinkMixin, admin.ModelAdmin):
    list_display = (
        "code",
        "name",
        "kind",
        "launched_on",
        "age",
        "active_advertisers_28d",
        "mean_daily_expenditure",
        "stats_as_of",
    )
    list_filter = ("kind", "launched_on")
    search_fields = ("code", "name")
    date_hierarchy = "launched_on"
    readonly_fields = ("active_advertisers_28d", "mean_daily_expenditure", "stats_as_of", "age")

    @admin.display(description="age (days)")
    def age(self, scenario: Scenario) -> int | None:
        return scenario.age_days


@admin.register(Advertiser)
class AdvertiserAdmin(UploadLinkMixin, admin.ModelAdmin):
    list_display = (
        "advertiser_id",
        "name",
        "registered_on",
        "business_scale",
        "main_category",
        "star_level",
    )
    list_filter = ("business_scale", "star_level", "main_category", "registered_on")
    search_fields = ("advertiser_id", "name")
    date_hierarchy = "registered_on"


def _upload_fix(error: IngestError) -> str:
    hint = error.implausible_hint("tick 'Allow implausible' to load anyway")
    return f"Fix the files and upload again{hint}."


@admin.register(DailyStat)
class DailyStatAdmin(UploadLinkMixin, admin.ModelAdmin):
    list_display = (
        "date",
        "advertiser",
        "scenario",
        "impressions",
        "clicks",
        "expenditure",
        "gmv",
        "logins",
        "campaign_edits",
        "bid_changes",
        "budget_changes",
    )
    list_filter = ("scenario", "date")
    # Exact matches use the indexes; a substring search would scan millions of rows.
    search_fields = ("=advertiser__advertiser_id", "=scenario__code")
    search_help_text = "Exact advertiser id or scenario code."
    date_hierarchy = "date"
    list_select_related = ("advertiser", "scenario")
    show_full_result_count = False  # counting every row on each page view is slow on big tables

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: DailyStat | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DailyStat | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        upload = path(
            "upload/",
            self.admin_site.admin_view(self.upload_view),
            name="advertisers_dailystat_upload",
        )
        return [upload, *super().get_urls()]

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm(UPLOAD_PERMISSION):
            raise PermissionDenied
        posted = request.method == "POST"
        form = DataUploadForm(request.POST, request.FILES) if posted else DataUploadForm()
        if posted and form.is_valid():
            with tempfile.TemporaryDirectory(prefix="upload-") as folder:
                try:
                    report = ingest_files(
                        **form.save_files(Path(folder)),
                        ignore_unknown_columns=form.cleaned_data["ignore_unknown_columns"],
                        allow_implausible=form.cleaned_data["allow_implausible"],
                    )
                except IngestError as error:
                    messages.error(request, f"Rejected: {error}. {_upload_fix(error)}")
                    for line in error.lines():
                        messages.error(request, line)
                else:
                    messages.success(request, report.summary())
                    for line in report.warnings:
                        messages.warning(request, f"Loaded anyway: {line}")
                    return redirect("admin:advertisers_dailystat_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Upload data files",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "advertisers/admin/upload.html", context)

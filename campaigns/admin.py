"""Admin for ops: templates (edits of used ones become new versions), campaigns with preview,
launch, pause, resume and close actions, tasks, the budget ledger, push messages and API keys
(the secret is shown once, on creation). Every write goes through campaigns.services."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from campaigns import selectors
from campaigns.lifecycle import TransitionNotAllowed
from campaigns.models import (
    ApiKey,
    ApiScope,
    BudgetLedgerEntry,
    Campaign,
    IncentiveTask,
    PushMessage,
    TaskState,
    TaskTemplate,
    TaskTransition,
    UpliftModel,
)
from campaigns.selectors import NoModelVersion
from campaigns.services import (
    CampaignStateError,
    ProductionError,
    api_key_create,
    api_key_revoke,
    campaign_close,
    campaign_launch,
    campaign_pause,
    campaign_produce,
    campaign_resume,
    campaign_templates_validate,
    tasks_transition_bulk,
    template_update,
)
from campaigns.services.templates import EDITABLE_FIELDS

# --- templates ---------------------------------------------------------------------------------


@admin.register(TaskTemplate)
class TaskTemplateAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "version",
        "is_current",
        "kind",
        "scenario",
        "reward_type",
        "reward_value",
        "minimum_target",
        "validity_days",
    )
    list_filter = ("is_current", "kind", "scenario")
    search_fields = ("name",)
    readonly_fields = ("family", "version", "is_current", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: TaskTemplate | None = None) -> tuple:
        if obj is not None and not obj.is_current:  # old versions are history
            return (*EDITABLE_FIELDS, *self.readonly_fields)
        return self.readonly_fields

    def save_model(
        self, request: HttpRequest, obj: TaskTemplate, form: forms.ModelForm, change: bool
    ) -> None:
        if not change:
            obj.save()
            return
        original = TaskTemplate.objects.get(pk=obj.pk)
        changes = {
            name: form.cleaned_data[name] for name in form.changed_data if name in EDITABLE_FIELDS
        }
        saved = template_update(template=original, changes=changes)
        if saved.pk != original.pk:
            messages.info(
                request,
                f"{original} is used by tasks, which keep their terms; the edit was saved as "
                f"{saved}, which new tasks will use.",
            )
            obj.pk, obj.version = saved.pk, saved.version


# --- campaigns ---------------------------------------------------------------------------------


class CampaignForm(forms.ModelForm):
    class Meta:
        model = Campaign
        fields = (
            "name",
            "scenarios",
            "model_kind",
            "model_version",
            "policy",
            "threshold",
            "top_n",
            "targeting",
            "objective",
            "holdout_share",
            "lookback_days",
            "cooldown_days",
            "templates",
            "budget",
            "reward_cap",
            "starts_at",
            "ends_at",
        )

    def clean(self) -> dict:
        data = super().clean()
        scenarios, templates = data.get("scenarios"), data.get("templates")
        if scenarios is not None and templates is not None:
            campaign_templates_validate(scenario_ids=[s.pk for s in scenarios], templates=templates)
        budget, instance = data.get("budget"), self.instance
        if budget is not None and instance.pk and budget < instance.reserved + instance.settled:
            spent = instance.reserved + instance.settled
            raise ValidationError(
                {"budget": f"{spent} is already reserved or paid; the budget cannot go below that."}
            )
        return data


class PausedFilter(admin.SimpleListFilter):
    title = "paused"
    parameter_name = "paused"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [("yes", "Paused"), ("no", "Not paused")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(paused_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(paused_at__isnull=True)
        return queryset


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    # Narrow columns only, so the money fits a laptop screen without horizontal scrolling.
    list_display = (
        "name",
        "state",
        "model_used",
        "budget",
        "reserved",
        "settled",
        "remaining",
        "period",
    )
    list_filter = ("status", PausedFilter, "model_kind", "policy")
    list_select_related = ("model_version",)
    search_fields = ("name",)
    filter_horizontal = ("scenarios", "templates")
    readonly_fields = (
        "status",
        "paused_at",
        "reserved",
        "settled",
        "remaining",
        "ledger",
        "tasks_by_state",
        "incremental",
        "launched_at",
        "closed_at",
    )
    actions = (
        "preview_campaigns",
        "launch_campaigns",
        "pause_campaigns",
        "resume_campaigns",
        "close_campaigns",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Campaign | None = None) -> tuple:
        if obj is None:  # a new campaign has no money, tasks or history to show yet
            return ()
        return self.readonly_fields

    def formfield_for_manytomany(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "templates":
            kwargs["queryset"] = TaskTemplate.objects.filter(is_current=True)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    @admin.display(description="remaining")
    def remaining(self, obj: Campaign) -> str:
        return "-" if obj.budget is None else str(obj.remaining)

    @admin.display(description="status", ordering="status")
    def state(self, obj: Campaign) -> str:
        return f"{obj.status}, paused" if obj.is_paused else obj.status

    @admin.display(description="model")
    def model_used(self, obj: Campaign) -> str:
        if obj.model_version_id:
            return f"{obj.model_version.kind} #{obj.model_version_id}"
        return f"active {obj.model_kind}"

    @admin.display(description="period", ordering="starts_at")
    def period(self, obj: Campaign) -> str:
        ends = f"{obj.ends_at:%Y-%m-%d}" if obj.ends_at else "open"
        return f"{obj.starts_at:%Y-%m-%d} to {ends}"

    @admin.display(description="budget ledger")
    def ledger(self, obj: Campaign) -> str:
        if not obj.pk:
            return "-"
        totals = selectors.campaign_ledger_totals(campaign=obj)
        url = reverse("admin:campaigns_budgetledgerentry_changelist")
        return format_html(
            '<a href="{}?campaign__id__exact={}">entries</a>: reserved {}, released {}, settled {}',
            url,
            obj.pk,
            totals["reserve"],
            totals["release"],
            totals["settle"],
        )

    @admin.display(description="incremental actives (holdout)")
    def incremental(self, obj: Campaign) -> str:
        """Expected (uplift allocation) against measured, from the tasks and the holdout."""
        if not obj.pk:
            return "-"
        inc = selectors.campaign_incremental(campaign=obj)
        expected = inc["expected_incremental_actives"]
        expected_text = "-" if expected is None else f"{expected:.1f}"
        if inc["measured_incremental_actives"] is None:
            measured = inc.get("not_estimable", "-")
        else:
            lo, hi = inc["ci"]
            measured = (
                f"{inc['measured_incremental_actives']:+.1f} [{lo:+.1f}, {hi:+.1f}] "
                f"(active {inc['active_rate_tasks']:.1%} with a task, "
                f"{inc['active_rate_holdout']:.1%} in the holdout)"
            )
        return (
            f"expected {expected_text}; measured {measured}; {inc['tasks']} tasks, holdout "
            f"{inc['holdout']} ({obj.holdout_share:.0%}); spend {inc['spend']}"
        )

    @admin.display(description="tasks")
    def tasks_by_state(self, obj: Campaign) -> str:
        if not obj.pk:
            return "-"
        counts = selectors.campaign_task_counts(campaign=obj)
        return ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "none"

    @admin.action(description="Preview production (writes nothing)")
    def preview_campaigns(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        previews = []
        for campaign in queryset.order_by("pk"):
            try:
                previews.append((campaign, campaign_produce(campaign=campaign, dry_run=True), None))
            except (ProductionError, NoModelVersion) as exc:
                previews.append((campaign, None, str(exc)))
        context = {
            **self.admin_site.each_context(request),
            "title": "Preview production",
            "opts": self.model._meta,
            "previews": previews,
            "selected": [c.pk for c in queryset],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/preview.html", context)

    @admin.action(description="Launch (schedule, or produce tasks now)")
    def launch_campaigns(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = f"admin:{request.user}"
        for campaign in queryset.order_by("pk"):
            try:
                result = campaign_launch(campaign=campaign, actor=actor)
            except (CampaignStateError, ProductionError, NoModelVersion) as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            if result is None:
                self.message_user(request, f"{campaign}: scheduled for {campaign.starts_at}.")
            else:
                self.message_user(
                    request,
                    f"{campaign}: produced {result.produced} tasks, reserved "
                    f"{result.budget_reserved} ({result.skipped_budget} skipped for budget).",
                )

    @admin.action(description="Pause (no new tasks or leases; open tasks keep their terms)")
    def pause_campaigns(self, request: HttpRequest, queryset: QuerySet) -> None:
        for campaign in queryset.order_by("pk"):
            try:
                paused = campaign_pause(campaign=campaign, actor=f"admin:{request.user}")
            except CampaignStateError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(request, f"{campaign}: {'paused' if paused else 'already paused'}.")

    @admin.action(description="Resume (lift a pause)")
    def resume_campaigns(self, request: HttpRequest, queryset: QuerySet) -> None:
        for campaign in queryset.order_by("pk"):
            resumed = campaign_resume(campaign=campaign, actor=f"admin:{request.user}")
            self.message_user(request, f"{campaign}: {'resumed' if resumed else 'was not paused'}.")

    @admin.action(description="Close (cancel tasks not yet accepted)")
    def close_campaigns(self, request: HttpRequest, queryset: QuerySet) -> None:
        for campaign in queryset.order_by("pk"):
            cancelled = campaign_close(campaign=campaign, actor=f"admin:{request.user}")
            self.message_user(request, f"{campaign}: closed, {cancelled} tasks cancelled.")


# --- tasks, ledger, messages -------------------------------------------------------------------


class TaskTransitionInline(admin.TabularInline):
    model = TaskTransition
    extra = 0
    can_delete = False
    readonly_fields = ("from_state", "to_state", "actor", "note", "created_at")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services: ops may look, filter and act, never edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(IncentiveTask)
class IncentiveTaskAdmin(ReadOnlyAdmin):
    # Filters are the admin's own list_filter (campaign, state, scenario, kind): the list needs
    # nothing django-filter adds, and the API filters with its own serializers.
    list_display = (
        "id",
        "advertiser_code",
        "campaign",
        "kind",
        "scenario",
        "state",
        "target",
        "reward",
        "progress",
        "selected_by",
        "model_used",
        "valid_until",
    )
    list_filter = ("campaign", "state", "scenario", "kind")
    list_select_related = ("advertiser", "campaign", "scenario", "model_version")
    search_fields = ("advertiser__advertiser_id",)
    inlines = (TaskTransitionInline,)
    actions = ("cancel_tasks",)

    @admin.display(description="advertiser id", ordering="advertiser__advertiser_id")
    def advertiser_code(self, obj: IncentiveTask) -> str:
        return obj.advertiser.advertiser_id

    @admin.display(description="selected by")
    def selected_by(self, obj: IncentiveTask) -> str:
        """The score that selected the task under its targeting: P(inactive), the uplift
        allocation's expected gain, or (older models) the predicted active days."""
        labels = {
            "p_inactive": "P(inactive)",
            "uplift": "expected gain",
            "exploration": "exploration, reward x",
            "random": "random",
        }
        if obj.selection_kind in labels and obj.selection_score is not None:
            return f"{labels[obj.selection_kind]} {obj.selection_score:.3f}"
        return f"predicted active days {obj.predicted_activity:.2f}"

    @admin.display(description="model version", ordering="model_version")
    def model_used(self, obj: IncentiveTask) -> str:
        version = obj.model_version
        return "-" if version is None else f"{version.kind} #{version.pk}"

    @admin.action(description="Cancel (release their reservations)")
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        try:
            batch = tasks_transition_bulk(
                task_ids=queryset.values_list("pk", flat=True),
                to=TaskState.CANCELLED,
                actor=f"admin:{request.user}",
            )
        except TransitionNotAllowed as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(
            request, f"Cancelled {len(batch.ids)} tasks (final ones left as they were)."
        )


@admin.register(BudgetLedgerEntry)
class BudgetLedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "campaign", "task", "kind", "amount", "created_at")
    list_filter = ("campaign", "kind")
    list_select_related = ("campaign",)


@admin.register(PushMessage)
class PushMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "advertiser", "status", "lease_owner", "lease_expires_at", "created_at")
    list_filter = ("status",)
    list_select_related = ("advertiser",)
    search_fields = ("advertiser__advertiser_id",)


# --- API keys ----------------------------------------------------------------------------------


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields = ("name", "scopes", "is_active")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("name", "prefix", "scopes", "is_active", "created_at", "last_used_at")
    list_filter = ("is_active",)
    readonly_fields = ("prefix", "created_at", "last_used_at")
    actions = ("revoke_keys",)

    def save_model(
        self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            obj.save()
            return
        api_key, secret = api_key_create(name=obj.name, scopes=form.cleaned_data["scopes"])
        obj.pk, obj.prefix, obj.secret_hash = api_key.pk, api_key.prefix, api_key.secret_hash
        obj._state.adding = False
        messages.warning(
            request,
            format_html(
                "Secret of API key {}: <code>{}</code> - copy it now: only its hash is stored, "
                "it will not be shown again. Send it as <code>Authorization: Api-Key "
                "&lt;secret&gt;</code>.",
                api_key.name,
                secret,
            ),
        )

    @admin.action(description="Revoke")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet) -> None:
        for api_key in queryset:
            api_key_revoke(api_key=api_key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(UpliftModel)
class UpliftModelAdmin(admin.ModelAdmin):
    """Trained uplift models (campaigns.services.uplift): read-only, the newest is used."""

    list_display = ("pk", "created_at", "rows", "qini_coefficient", "trained_on")
    readonly_fields = ("artifact", "trained_on", "rows", "quality", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Qini coefficient (held out)")
    def qini_coefficient(self, obj: UpliftModel) -> str:
        value = (obj.quality or {}).get("qini_coefficient")
        return "-" if value is None else f"{value:.4f}"

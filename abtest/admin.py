"""Admin for experiments: settings, arms, life-cycle actions and the report page.

Thin: every write goes through `abtest.services`, every number through `abtest.selectors`.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from abtest import analysis, charts, display, services
from abtest.models import MAX_ARMS, Arm, Assignment, Experiment
from abtest.selectors import experiment_report
from campaigns.models import TaskTemplate

ANALYSIS_FIELDS = ("analysis_mode", "sequential_tuning_parameter", "prior_proper", "prior_mean",
                   "prior_stddev")  # fmt: skip
CREATE_FIELDS = (
    "key", "hypothesis", "population_filter", "holdout_share", "template_ids", "targets_per_arm",
    "inactivity_threshold", "budget_per_arm", "reward_cap", "pre_period_days", "evaluation_days",
    "alpha", "winsor_quantile", "expected_relative_lift", *ANALYSIS_FIELDS,
)  # fmt: skip


def _template_label(template: TaskTemplate) -> str:
    scope = template.scenario.code if template.scenario_id else "any scenario"
    return f"{template} - {template.get_kind_display()}, {scope}, reward {template.reward_value}"


class TemplateCheckboxes(forms.CheckboxSelectMultiple):
    """Checkboxes; a scripted post may still send the ids as one JSON list, e.g. "[1, 2]"."""

    def value_from_datadict(self, data, files, name: str) -> list[str]:
        values = super().value_from_datadict(data, files, name)
        if len(values) == 1 and values[0].strip().startswith("["):
            try:
                parsed = json.loads(values[0])
            except ValueError:
                return values
            if isinstance(parsed, list):
                return [str(v) for v in parsed]
        return values


class ExperimentForm(forms.ModelForm):
    """Validates with the services' own checks, so a bad value is a form error, not a crash."""

    template_ids = forms.ModelMultipleChoiceField(
        queryset=TaskTemplate.objects.none(),
        required=False,
        widget=TemplateCheckboxes,
        label="Task templates",
        help_text="The templates both arms' campaigns use (current versions).",
    )

    class Meta:
        model = Experiment
        fields = (*CREATE_FIELDS, "scenarios")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ANALYSIS_FIELDS:
            if name in self.fields:
                self.fields[name].required = False
        if "template_ids" not in self.fields:  # read-only once the experiment started
            return
        # The current versions, plus any older version this experiment already uses.
        chosen = self.instance.template_ids if self.instance.pk else []
        self.fields["template_ids"].queryset = TaskTemplate.objects.filter(
            Q(is_current=True) | Q(pk__in=chosen or [])
        ).select_related("scenario")
        self.fields["template_ids"].label_from_instance = _template_label

    def clean(self) -> dict:
        data = super().clean()
        if data.get("targets_per_arm") is not None and data.get("inactivity_threshold") is not None:
            raise ValidationError("set targets per arm or an inactivity threshold, not both")
        # A scripted post may leave the analysis settings out: they keep their defaults.
        for name in ANALYSIS_FIELDS:
            if name in self.fields and data.get(name) in (None, ""):
                data[name] = Experiment._meta.get_field(name).get_default()
        return data

    def clean_population_filter(self) -> dict:
        value = self.cleaned_data["population_filter"] or {}
        try:
            services.population_filter_validate(value)
        except ValidationError as exc:
            raise ValidationError(exc.messages) from exc
        return value

    def clean_template_ids(self) -> list[int]:
        ids = sorted(t.pk for t in self.cleaned_data["template_ids"] or [])
        try:
            services.templates_check(ids)
        except ValidationError as exc:
            raise ValidationError(exc.messages) from exc
        return ids


def _arm_spec(data: dict) -> services.ArmSpec:
    return services.ArmSpec(
        name=(data.get("name") or "").strip(),
        role=data.get("role") or Arm.Role.TREATMENT,
        model_kind=data.get("model_kind") or "",
        model_version=data.get("model_version"),
        weight=data.get("weight") if data.get("weight") is not None else 1.0,
        targeting=data.get("targeting") or Arm.Targeting.LEAST_ACTIVITY,
    )


class ArmFormSet(forms.BaseInlineFormSet):
    """Checks the arms as a set with the service's rules (one control, unique names, ...)."""

    def specs(self) -> list[services.ArmSpec]:
        return [
            _arm_spec(form.cleaned_data)
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]

    def clean(self) -> None:
        super().clean()
        if any(form.errors for form in self.forms):
            return
        try:
            services.arm_specs_validate(self.specs())
        except ValidationError as exc:
            raise ValidationError(exc.messages) from exc

    def validate_unique(self) -> None:
        pass  # names and the one control are checked as a set in clean()


class ArmInline(admin.TabularInline):
    """A draft's arms (control plus up to five treatments); frozen once the experiment runs."""

    model = Arm
    formset = ArmFormSet
    extra = 0
    max_num = MAX_ARMS
    fields = ("position", "name", "role", "targeting", "model_kind", "model_version", "weight",
              "campaign_id")  # fmt: skip
    readonly_fields = ("position", "campaign_id")

    def _draft(self, obj: Experiment | None) -> bool:
        return obj is None or obj.status == Experiment.Status.DRAFT

    def has_change_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        return self._draft(obj) and super().has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        return self._draft(obj) and super().has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        return self._draft(obj) and super().has_delete_permission(request, obj)


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentForm
    list_display = ("key", "status", "start_date", "evaluation_days", "assigned", "report_link")
    list_filter = ("status",)
    search_fields = ("key", "hypothesis")
    filter_horizontal = ("scenarios",)
    readonly_fields = (
        "seed", "status", "start_date", "plan_summary", "report_link", "created_at",
        "started_at", "analysed_at", "completed_at",
    )  # fmt: skip
    actions = ("start_today", "analyse", "analyse_interim", "complete")

    def get_fieldsets(self, request: HttpRequest, obj: Experiment | None = None) -> list:
        fields = [f for f in self.get_fields(request, obj) if f not in ANALYSIS_FIELDS]
        return [
            (None, {"fields": fields}),
            (
                "Analysis",
                {
                    "fields": ANALYSIS_FIELDS,
                    "description": "Every report shows the frequentist, sequential and Bayesian "
                    "results; the mode decides which one the verdicts follow. Pick sequential "
                    "to look at a running experiment every day, Bayesian for chance to win.",
                },
            ),
        ]

    def get_inlines(self, request: HttpRequest, obj: Experiment | None) -> list:
        return [] if obj is None else [ArmInline]  # the service creates the arms

    def get_readonly_fields(self, request: HttpRequest, obj: Experiment | None = None) -> tuple:
        if obj is not None and obj.status != Experiment.Status.DRAFT:
            frozen = (*(f.name for f in Experiment._meta.fields if f.editable), "scenarios")
            return (*self.readonly_fields, *frozen)
        return self.readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Experiment]:
        return super().get_queryset(request).prefetch_related("arms")

    @admin.display(description="assigned")
    def assigned(self, obj: Experiment) -> int:
        return Assignment.objects.filter(experiment=obj).count()

    @admin.display(description="report")
    def report_link(self, obj: Experiment) -> str:
        if obj.pk is None or obj.start_date is None:
            return "-"
        return format_html(
            '<a href="{}">Report</a>', reverse("admin:abtest_experiment_report", args=[obj.pk])
        )

    @admin.display(description="plan (power and MDE)")
    def plan_summary(self, obj: Experiment) -> str:
        plan = obj.plan or {}
        if not plan:
            return "-"
        rows = [("population", plan.get("population")), ("holdout", plan.get("n_holdout"))]
        for name in ("itt", "targeted"):
            part = plan.get(name)
            if not part:
                continue
            rows += [
                (f"{name}: size per arm", f"{part['n_control']} / {part['n_treatment']}"),
                (
                    f"{name}: MDE active rate (CUPED)",
                    display.with_cuped(part, "mde_active_rate", ".2%"),
                ),
                (f"{name}: MDE ARPU (CUPED)", display.with_cuped(part, "mde_arpu", ".2%")),
                (
                    f"{name}: power at {plan['expected_relative_lift']:.0%} lift "
                    "(active rate / ARPU)",
                    f"{part['power_active_rate']:.0%} / {part['power_arpu']:.0%}",
                ),
            ]
            if "power_arpu_cuped" in part:
                rows.append(
                    (
                        f"{name}: power with CUPED",
                        f"{part['power_active_rate_cuped']:.0%} / {part['power_arpu_cuped']:.0%}",
                    )
                )
        rows += [
            ("baseline active rate", display.fmt(plan.get("active_rate"), ".2%")),
            ("baseline ARPU", display.fmt(plan.get("arpu"), ".2f")),
        ]
        r_squared = plan.get("r_squared")
        if r_squared:
            window = " to ".join(plan.get("cuped_window") or []) or "-"
            rows.append(
                (
                    f"pre-period R^2 (active rate / ARPU), {window}",
                    f"{r_squared['active_rate']:.3f} / {r_squared['arpu']:.3f}",
                )
            )
        return format_html(
            "<table>{}</table>",
            format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows),
        )

    # --- writes through services --------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: Experiment, form, change: bool) -> None:
        data = {k: form.cleaned_data[k] for k in CREATE_FIELDS if k in form.cleaned_data}
        if not change:
            created = services.experiment_create(**data)
            obj.pk = created.pk
            obj.refresh_from_db()
            itt = obj.plan.get("itt", {})
            cuped = display.with_cuped
            self.message_user(
                request,
                f"Planned {itt.get('n_control')} / {itt.get('n_treatment')} advertisers per arm: "
                f"minimum detectable lift {cuped(itt, 'mde_active_rate', '.2%')} in active "
                f"rate and {cuped(itt, 'mde_arpu', '.2%')} in ARPU (80% power; with CUPED "
                "in brackets).",
                messages.INFO,
            )
            return
        changed = {k: v for k, v in data.items() if k in form.changed_data and k != "key"}
        services.experiment_settings_update(experiment=obj, **changed)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if not isinstance(formset, ArmFormSet):
            super().save_formset(request, form, formset, change)
            return
        # The service replaces the arms as a set; the admin's change message reads these.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        experiment = form.instance
        if experiment.status == Experiment.Status.DRAFT and formset.has_changed():
            formset.new_objects = services.experiment_arms_set(
                experiment=experiment, arms=formset.specs()
            )

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if form.instance.status == Experiment.Status.DRAFT:
            services.experiment_plan_refresh(experiment=form.instance)

    def _each(
        self, request: HttpRequest, queryset: QuerySet[Experiment], action, done: str
    ) -> None:
        for experiment in queryset:
            try:
                action(experiment)
            except ValidationError as exc:
                self.message_user(request, f"{experiment.key}: {'; '.join(exc.messages)}",
                                  messages.ERROR)  # fmt: skip
            else:
                self.message_user(request, f"{experiment.key}: {done}", messages.SUCCESS)

    @admin.action(description="Start today (assign and produce tasks)")
    def start_today(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._each(
            request,
            queryset,
            lambda e: services.experiment_start(experiment=e, start_date=timezone.localdate()),
            "started",
        )

    @admin.action(description="Analyse (evaluation window over)")
    def analyse(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._each(request, queryset, lambda e: services.experiment_analyse(experiment=e),
                   "analysing")  # fmt: skip

    @admin.action(description="Analyse now (interim look)")
    def analyse_interim(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._each(
            request, queryset, lambda e: services.experiment_analyse(experiment=e, force=True),
            "analysing",
        )  # fmt: skip

    @admin.action(description="Complete (freeze the report)")
    def complete(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._each(request, queryset, lambda e: services.experiment_complete(experiment=e),
                   "completed")  # fmt: skip

    # --- report pages ---------------------------------------------------------------------

    def get_urls(self) -> list:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/report/", view(self.report_view),
                 name="abtest_experiment_report"),
            path("<path:object_id>/report.csv", view(self.report_csv_view),
                 name="abtest_experiment_report_csv"),
            *super().get_urls(),
        ]  # fmt: skip

    def report_view(self, request: HttpRequest, object_id: str) -> TemplateResponse:
        experiment = get_object_or_404(Experiment, pk=object_id)
        if not self.has_view_permission(request, experiment):
            raise PermissionDenied("no view permission on experiments")
        report = experiment_report(experiment=experiment)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Report: {experiment.key}",
            "experiment": experiment,
            "report": report,
            "rows": display.rows(report),
            "mode": display.mode(report),
            "view_choices": [*display.MODE_LABELS.items(), ("all", "all three")],
            "decisive": f"{1 - experiment.alpha:.0%}",
            "arm_table": display.arm_table(report),
            "cost_per_incremental": display.cost_per_incremental(report),
            "incremental": display.incremental(report),
            "control_arm": next(
                (a["name"] for a in report.get("arms", []) if a["role"] == Arm.Role.CONTROL), "-"
            ),
            "confidence": f"{1 - experiment.alpha:.0%}",
            "charts": [
                {**chart, "svg": mark_safe(chart["svg"])}
                for chart in charts.report_charts(report.get("daily", {}))
            ],
            "breakdown_charts": [
                {**chart, "svg": mark_safe(chart["svg"])}
                for chart in charts.breakdown_charts(report.get("breakdowns") or {})
            ],
            "incremental_chart": mark_safe(charts.incremental_chart(report) or ""),
            "api_url": reverse("experiment-report", args=[experiment.key]),
        }
        return TemplateResponse(request, "admin/abtest/experiment/report.html", context)

    def report_csv_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        experiment = get_object_or_404(Experiment, pk=object_id)
        if not self.has_view_permission(request, experiment):
            raise PermissionDenied("no view permission on experiments")
        body = analysis.report_csv(experiment_report(experiment=experiment))
        response = HttpResponse(body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{experiment.key}-report.csv"'
        return response

"""Admin for the model registry and the run records.

Model versions are listed with their test metrics and have three actions: train a new version of
each selected kind, evaluate the selected versions on the latest known week, and activate one.
Training and prediction runs are read-only: they are written by the tasks.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from predictor import services, tasks
from predictor.evaluation import fmt
from predictor.models import ModelVersion, Prediction, PredictionChunk, PredictionRun, TrainingRun


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def _cell(cell: dict | None) -> str:
    if not cell:
        return "-"
    return f"{fmt(cell.get('nmae'))} / {fmt(cell.get('smape'))} (n={cell.get('n', '-')})"


def metrics_tables(metrics: dict) -> SafeString:
    """One table per evaluated split (test, recent, ...): a row per scenario and one for all
    scenarios, a column per task, each cell "NMAE / SMAPE (n)"; the overall mean below."""
    tables = []
    for split, result in (metrics or {}).items():
        if not isinstance(result, dict) or "by_scenario" not in result:
            continue
        by_scenario, by_task = result["by_scenario"], result.get("by_task", {})
        tasks = list(by_task) or sorted({t for row in by_scenario.values() for t in row})
        rows = [(code, [_cell(row.get(t)) for t in tasks]) for code, row in by_scenario.items()]
        rows.append(("all scenarios", [_cell(by_task.get(t)) for t in tasks]))
        overall = result.get("overall", {})
        tables.append(
            format_html(
                '<table class="metrics-table"><caption>{} split: NMAE / SMAPE (n rows); '
                "overall NMAE {}, SMAPE {} over {} cells</caption><thead><tr><th>scenario</th>"
                "{}</tr></thead><tbody>{}</tbody></table>",
                split,
                fmt(overall.get("nmae")),
                fmt(overall.get("smape")),
                overall.get("cells", "-"),
                format_html_join("", "<th>{}</th>", ((t,) for t in tasks)),
                format_html_join(
                    "",
                    "<tr><th>{}</th>{}</tr>",
                    (
                        (code, format_html_join("", "<td>{}</td>", ((c,) for c in cells)))
                        for code, cells in rows
                    ),
                ),
            )
        )
        if result.get("decisions"):
            tables.append(decisions_table(split, result["decisions"]))
    return format_html_join("", "{}", ((t,) for t in tables)) if tables else SafeString("-")


def _figure(table: dict | None, *path: str) -> str:
    value: object = table
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return fmt(value) if isinstance(value, int | float) else "-"


def decisions_table(split: str, decisions: dict) -> SafeString:
    """Per scenario and pooled: P(inactive)'s AUC, log-loss and calibration error, and the
    coverage of the 80% intervals (target 0.80)."""
    inactivity, intervals = decisions.get("inactivity"), decisions.get("intervals")
    scopes = sorted((inactivity or intervals or {}).get("by_scenario", {}))
    rows = []
    for label, scope in [*((c, ("by_scenario", c)) for c in scopes), ("pooled", ("pooled",))]:
        cells = [_figure(inactivity, *scope, m) for m in ("auc", "log_loss", "ece")]
        cells += [_figure(intervals, *scope, t, "coverage") for t in ("expenditure", "clicks")]
        rows.append((label, format_html_join("", "<td>{}</td>", ((c,) for c in cells))))
    return format_html(
        '<table class="metrics-table"><caption>{} split: P(inactive) and 80% intervals'
        "</caption><thead><tr><th>scenario</th><th>AUC</th><th>log-loss</th><th>ECE</th>"
        "<th>expenditure coverage</th><th>clicks coverage</th></tr></thead><tbody>{}</tbody>"
        "</table>",
        split,
        format_html_join("", "<tr><th>{}</th>{}</tr>", rows),
    )


def _overall(version: ModelVersion, metric: str) -> str:
    value = (version.metrics or {}).get("test", {}).get("overall", {}).get(metric)
    return "-" if value is None else fmt(value)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "created_at",
        "activated_at",
        "nmae",
        "smape",
        "train_start",
        "train_end",
    )
    list_filter = ("kind", "status")
    # The metrics as tables (scenario x task) instead of their JSON.
    readonly_fields = [
        "metrics_table" if f.name == "metrics" else f.name for f in ModelVersion._meta.fields
    ]
    actions = ("train_kinds", "evaluate_versions", "activate_version")

    @admin.display(description="metrics")
    def metrics_table(self, obj: ModelVersion) -> SafeString:
        return metrics_tables(obj.metrics)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions come from training, never from a form

    @admin.display(description="test NMAE")
    def nmae(self, obj: ModelVersion) -> str:
        return _overall(obj, "nmae")

    @admin.display(description="test SMAPE")
    def smape(self, obj: ModelVersion) -> str:
        return _overall(obj, "smape")

    @admin.action(description="Train a new version of the selected kinds (paper defaults)")
    def train_kinds(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        kinds = sorted(set(queryset.values_list("kind", flat=True)))
        for kind in kinds:
            tasks.enqueue_training(services.training_run_create(kind=kind))
        self.message_user(request, f"Training queued for {', '.join(kinds)}; see Training runs.")

    @admin.action(description="Evaluate the selected versions on the latest known week")
    def evaluate_versions(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        for version in queryset:
            tasks.enqueue_evaluation(version)
        self.message_user(request, f"Evaluation queued for {queryset.count()} version(s).")

    @admin.action(description="Activate the selected version (retires the active one of its kind)")
    def activate_version(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        try:
            version = services.model_version_activate(version=queryset.get())
        except (ValueError, services.ModelArtifactError) as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"{version} is now active.")


@admin.register(TrainingRun)
class TrainingRunAdmin(_ReadOnly):
    list_display = (
        "id",
        "kind",
        "status",
        "progress",
        "message",
        "model_version",
        "created_at",
        "finished_at",
    )
    list_filter = ("kind", "status")
    readonly_fields = [f.name for f in TrainingRun._meta.fields]


class PredictionChunkInline(admin.TabularInline):
    model = PredictionChunk
    extra = 0
    can_delete = False
    readonly_fields = [f.name for f in PredictionChunk._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(PredictionRun)
class PredictionRunAdmin(_ReadOnly):
    list_display = (
        "id",
        "model_version",
        "as_of",
        "status",
        "progress_pct",
        "pairs_scored",
        "error",
        "created_at",
    )
    list_filter = ("status",)
    readonly_fields = [f.name for f in PredictionRun._meta.fields]
    inlines = (PredictionChunkInline,)

    @admin.display(description="progress")
    def progress_pct(self, obj: PredictionRun) -> str:
        return f"{100 * obj.progress:.0f}% ({obj.chunks_done}/{obj.chunks_total})"


@admin.register(Prediction)
class PredictionAdmin(_ReadOnly):
    list_display = (
        "advertiser",
        "scenario",
        "as_of",
        "model_version",
        "p_inactive_shown",
        "expenditure_shown",
        "clicks_shown",
        "active_days",
    )
    list_filter = ("as_of", "model_version__kind")
    list_select_related = ("advertiser", "scenario", "model_version")
    search_fields = ("advertiser__advertiser_id",)
    readonly_fields = [f.name for f in Prediction._meta.fields]

    @admin.display(description="P(inactive)", ordering="p_inactive")
    def p_inactive_shown(self, obj: Prediction) -> str:
        return "—" if obj.p_inactive is None else f"{obj.p_inactive:.1%}"

    @admin.display(description="expenditure (80% interval)", ordering="expenditure")
    def expenditure_shown(self, obj: Prediction) -> str:
        return _with_interval(obj.expenditure, obj.expenditure_p10, obj.expenditure_p90)

    @admin.display(description="clicks (80% interval)", ordering="clicks")
    def clicks_shown(self, obj: Prediction) -> str:
        return _with_interval(obj.clicks, obj.clicks_p10, obj.clicks_p90)


def _with_interval(mean: float, low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return f"{mean:,.1f}"
    return f"{mean:,.1f} [{low:,.1f}, {high:,.1f}]"

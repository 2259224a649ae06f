"""REST API of the A/B module: the experiment report as JSON for the `ops` scope."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from abtest.models import Experiment
from abtest.selectors import experiment_report
from campaigns.auth import ApiKeyAuthentication, ApiKeyRateThrottle, HasScope
from campaigns.models import ApiScope


class _EstimateSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True)
    se = serializers.FloatField(allow_null=True, required=False, help_text="standard error")
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)


class _ArmStatsSerializer(serializers.Serializer):
    n = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True)


class _SequentialSerializer(serializers.Serializer):
    absolute = _EstimateSerializer(allow_null=True)
    relative = _EstimateSerializer(allow_null=True)
    p_value = serializers.FloatField(allow_null=True, help_text="always-valid p-value")
    p_value_holm = serializers.FloatField(allow_null=True)
    p_value_bh = serializers.FloatField(allow_null=True)
    significant = serializers.BooleanField(help_text="Holm-corrected always-valid p < alpha")
    tuning = serializers.FloatField(help_text="gbstats' sequential_tuning_parameter")


class _PosteriorSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True, help_text="posterior mean of the lift")
    sd = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True, help_text="credible interval")
    ci_high = serializers.FloatField(allow_null=True)
    chance_to_win = serializers.FloatField(allow_null=True, help_text="P(lift > 0)")
    risk_control = serializers.FloatField(
        allow_null=True, help_text="expected loss of keeping the control"
    )
    risk_treatment = serializers.FloatField(
        allow_null=True, help_text="expected loss of shipping the treatment"
    )


class _PriorSerializer(serializers.Serializer):
    proper = serializers.BooleanField()
    mean = serializers.FloatField()
    stddev = serializers.FloatField()


class _BayesianSerializer(serializers.Serializer):
    absolute = _PosteriorSerializer(allow_null=True)
    relative = _PosteriorSerializer(allow_null=True)
    chance_to_win = serializers.FloatField(allow_null=True, help_text="of the headline lift")
    significant = serializers.BooleanField(
        help_text="chance to win >= 1 - alpha or <= alpha (not corrected for multiplicity)"
    )
    prior = _PriorSerializer(help_text="normal prior on the relative lift")


class _RowSerializer(serializers.Serializer):
    arm = serializers.CharField(
        required=False, help_text="the treatment arm compared with the control"
    )
    control_arm = serializers.CharField(required=False)
    metric = serializers.CharField(help_text="active_rate, arpu, clicks, active_days, ...")
    label = serializers.CharField()
    type = serializers.CharField(help_text="proportion, mean or ratio (delta method)")
    primary = serializers.BooleanField()
    population = serializers.ChoiceField(
        choices=["targeted", "itt"], help_text="targeted groups or whole arms (intention to treat)"
    )
    adjustment = serializers.ChoiceField(choices=["none", "cuped"])
    capped = serializers.BooleanField(help_text="winsorised at the experiment's quantile")
    control = _ArmStatsSerializer()
    treatment = _ArmStatsSerializer()
    absolute = _EstimateSerializer(allow_null=True)
    relative = _EstimateSerializer(allow_null=True, help_text="null when the control mean is 0")
    p_value = serializers.FloatField(allow_null=True)
    p_value_of = serializers.ChoiceField(
        required=False,
        choices=["relative", "absolute"],
        help_text="the lift the p-value and CI belong to",
    )
    p_value_holm = serializers.FloatField(allow_null=True)
    holm_family = serializers.ChoiceField(
        required=False,
        choices=["primary", "secondary"],
        help_text="Holm corrects across arms x metrics of this family within the block",
    )
    holm_family_size = serializers.IntegerField(required=False)
    p_value_bh = serializers.FloatField(
        allow_null=True, required=False, help_text="Benjamini-Hochberg (false discovery rate)"
    )
    analysis_mode = serializers.ChoiceField(
        choices=["frequentist", "sequential", "bayesian"], required=False
    )
    significant = serializers.BooleanField(help_text="the decision of the experiment's mode")
    significant_frequentist = serializers.BooleanField(
        required=False, help_text="fixed-horizon: Holm-corrected p < alpha"
    )
    sequential = _SequentialSerializer(required=False, help_text="always-valid results")
    bayesian = _BayesianSerializer(required=False, help_text="Gaussian-prior posterior")
    mde_relative = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text="relative lift detectable with 80% power at this size",
    )
    not_estimable = serializers.CharField(
        required=False, allow_null=True, help_text="why no lift is shown"
    )
    relative_not_estimable = serializers.CharField(required=False, allow_null=True)
    theta = serializers.FloatField(allow_null=True, help_text="CUPED coefficient")


class _GroupSerializer(serializers.Serializer):
    assigned = serializers.IntegerField()
    targeted = serializers.IntegerField()
    active = serializers.IntegerField()
    expenditure = serializers.DecimalField(max_digits=18, decimal_places=2, coerce_to_string=True)
    reward_cost = serializers.DecimalField(max_digits=18, decimal_places=2, coerce_to_string=True)
    net_expenditure = serializers.DecimalField(
        max_digits=18, decimal_places=2, coerce_to_string=True
    )


class _SrmSerializer(serializers.Serializer):
    p_value = serializers.FloatField()
    flagged = serializers.BooleanField()
    threshold = serializers.FloatField()
    observed = serializers.DictField(child=serializers.IntegerField())
    expected_share = serializers.DictField(child=serializers.FloatField())


class _SeriesSerializer(serializers.Serializer):
    group = serializers.CharField()
    population = serializers.CharField()
    n = serializers.IntegerField()
    active_rate = serializers.ListField(child=serializers.FloatField())
    arpu = serializers.ListField(child=serializers.FloatField())


class _DailySerializer(serializers.Serializer):
    dates = serializers.ListField(child=serializers.CharField())
    series = _SeriesSerializer(many=True)


class _ArmSerializer(serializers.Serializer):
    name = serializers.CharField()
    role = serializers.CharField()
    targeting = serializers.CharField(
        required=False, help_text="none, random, least_activity, uplift, external"
    )
    model = serializers.CharField()
    weight = serializers.FloatField()
    campaign_id = serializers.IntegerField(allow_null=True)
    n = serializers.IntegerField(required=False)
    targets = serializers.IntegerField(required=False)
    reward_spent = serializers.DecimalField(
        max_digits=18, decimal_places=2, coerce_to_string=True, required=False
    )
    active_rate = serializers.FloatField(allow_null=True, required=False)
    arpu = serializers.FloatField(allow_null=True, required=False)
    net_arpu = serializers.FloatField(allow_null=True, required=False)


class _VerdictSerializer(serializers.Serializer):
    arm = serializers.CharField()
    metric = serializers.CharField()
    label = serializers.CharField()
    text = serializers.CharField(help_text="the decision line, e.g. 'ARPU, m2m vs ...: +2.1% ...'")
    status = serializers.ChoiceField(choices=["significant", "not_significant", "not_estimable"])
    significant = serializers.BooleanField()
    winner = serializers.CharField(
        allow_null=True, required=False, help_text="the arm a decisive result favours"
    )
    analysis_mode = serializers.CharField(required=False)
    p_value_of = serializers.CharField()
    p_value = serializers.FloatField(allow_null=True, help_text="of the mode (null: Bayesian)")
    p_value_holm = serializers.FloatField(allow_null=True)
    chance_to_win = serializers.FloatField(allow_null=True, required=False)
    alpha = serializers.FloatField()
    row = serializers.CharField(help_text="id of the row the verdict reads")


class _DefinitionSerializer(serializers.Serializer):
    metric = serializers.CharField()
    label = serializers.CharField()
    type = serializers.CharField()
    primary = serializers.BooleanField()
    numerator = serializers.CharField()
    denominator = serializers.CharField()
    window = serializers.CharField()
    scope = serializers.CharField()
    cuped_covariate = serializers.CharField(allow_null=True)


class _IntervalSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True)
    se = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)


class _IncrementalArmSerializer(serializers.Serializer):
    arm = serializers.CharField()
    n = serializers.IntegerField()
    reward_spent = serializers.DecimalField(max_digits=18, decimal_places=2, coerce_to_string=True)
    incremental_active = _IntervalSerializer()
    incremental_net_revenue = _IntervalSerializer()
    incremental_active_per_1000 = _IntervalSerializer(allow_null=True)
    incremental_net_revenue_per_1000 = _IntervalSerializer(allow_null=True)
    not_estimable = serializers.CharField(allow_null=True)


class _IncrementalSerializer(serializers.Serializer):
    reference = serializers.CharField(help_text="the no-task arm, or the holdout")
    reference_kind = serializers.CharField()
    n_reference = serializers.IntegerField()
    level = serializers.FloatField()
    per_budget = serializers.FloatField()
    method = serializers.CharField()
    arms = _IncrementalArmSerializer(many=True)


class _CostSerializer(serializers.Serializer):
    arm = serializers.CharField()
    reference = serializers.CharField(help_text="the control, or the holdout")
    population = serializers.CharField()
    value = serializers.FloatField(allow_null=True, help_text="extra reward per extra active")
    se = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)
    not_estimable = serializers.CharField(allow_null=True, help_text="why no interval is shown")


class ReportOutputSerializer(serializers.Serializer):
    experiment = serializers.DictField(help_text="key, status, seed, windows and settings")
    computed_at = serializers.CharField(required=False)
    arms = _ArmSerializer(many=True)
    groups = serializers.DictField(
        child=_GroupSerializer(), required=False, help_text="by arm name, and 'holdout'"
    )
    srm = _SrmSerializer(required=False)
    rows = _RowSerializer(many=True)
    verdicts = _VerdictSerializer(many=True, required=False)
    metric_definitions = _DefinitionSerializer(many=True, required=False)
    incremental_vs_no_task_arm = _IncrementalSerializer(
        required=False, help_text="present with a no-task arm or a non-empty holdout"
    )
    cost_per_incremental_active = serializers.DictField(
        child=_CostSerializer(),
        required=False,
        help_text="'<arm>_vs_control_<population>' and '<arm>_vs_holdout'",
    )
    daily = _DailySerializer(required=False)
    notes = serializers.ListField(child=serializers.CharField())


class ExperimentReportApi(APIView):
    """GET /api/v1/experiments/<key>/report: the summary table, SRM, daily series and totals."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasScope]
    throttle_classes = [ApiKeyRateThrottle]
    required_scope = ApiScope.OPS

    @extend_schema(
        operation_id="experiment_report",
        responses={
            200: ReportOutputSerializer,
            401: OpenApiResponse(description="missing or invalid API key"),
            403: OpenApiResponse(description="the key lacks the ops scope"),
            404: OpenApiResponse(description="no experiment with this key"),
        },
    )
    def get(self, request: Request, key: str) -> Response:
        experiment = get_object_or_404(Experiment, key=key)
        report = experiment_report(experiment=experiment)
        return Response(ReportOutputSerializer(report).data)

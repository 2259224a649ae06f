"""The push-message REST API (mounted under /api/v1/): one view per operation, its input and
output serializers next to it. Views parse, call one service or selector and shape the answer.

push scope: the message feed, leases, delivery events. ops scope: everything read-only,
including task progress and predictions by advertiser.
"""

from __future__ import annotations

import functools
import json
import re
from base64 import urlsafe_b64decode, urlsafe_b64encode
from datetime import datetime, timedelta
from typing import Any

from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.fields import Field, SkipField, empty
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.mediatypes import media_type_matches
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from advertisers.models import Advertiser
from campaigns import selectors
from campaigns.auth import ApiKeyAuthentication, ApiKeyRateThrottle, HasScope
from campaigns.models import (
    ApiScope,
    IncentiveTask,
    PushMessage,
    TaskKind,
    TaskState,
    json_datetime,
)
from campaigns.services import (
    IdempotencyConflict,
    idempotent_execute,
    messages_lease,
    request_fingerprint,
)
from campaigns.services.push import (
    EVENT_STATES,
    EventInput,
    EventOutcome,
    NotLeaseHolder,
    messages_events_apply,
    messages_events_record_batch,
)
from predictor.models import ModelKind

IDEMPOTENCY_HEADER = "Idempotency-Key"
# The window an event's occurred_at may fall in: late reports, and a little clock skew.
EVENT_MAX_AGE = timedelta(days=30)
EVENT_MAX_AHEAD = timedelta(minutes=5)
EVENT_TYPES = sorted(EVENT_STATES)  # named in SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]


# --- shared pieces -----------------------------------------------------------------------------

# "+", not "*": DRF settles "" before validators run (allow_blank), and the schema then lists
# "" as its own alternative, which this pattern must not match as well.
NO_NUL_CHARACTER = RegexValidator(r"^[^\x00]+$", "Null characters are not allowed.")


class StrictCharField(serializers.CharField):
    """Takes JSON strings only; DRF's CharField would quietly turn 0 or true into text.

    DRF refuses a NUL character (PostgreSQL text cannot hold one); the same rule is written as
    a regex here so that the OpenAPI schema shows it as the field's pattern.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)
        ] + [NO_NUL_CHARACTER]

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """Takes JSON integers only; DRF's IntegerField also takes "5", 5.0 and true."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class ErrorOutputSerializer(serializers.Serializer):
    detail = serializers.CharField()


FIELD_ERRORS = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description="Validation failed: an object of field name -> list of messages.",
)
ERRORS = {
    401: OpenApiResponse(ErrorOutputSerializer, description="Missing, malformed or unknown key."),
    403: OpenApiResponse(ErrorOutputSerializer, description="The key lacks the scope."),
    429: OpenApiResponse(ErrorOutputSerializer, description="Too many requests for this key."),
}


class JsonOnly(BaseContentNegotiation):
    """The API speaks JSON only, so there is no Accept header to weigh (DRF's documented
    "ignore client content negotiation" pattern; it is measurable on the feed's hot path).
    A request body must be JSON: any other Content-Type is 415."""

    def select_parser(self, request: Request, parsers: list) -> Any:
        # A body of another media type is not guessed at: None makes DRF answer 415.
        content_type = request.content_type
        return next((p for p in parsers if media_type_matches(p.media_type, content_type)), None)

    def select_renderer(self, request: Request, renderers: list, format_suffix: str = "") -> tuple:
        return renderers[0], renderers[0].media_type


class ApiBase(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasScope]
    throttle_classes = [ApiKeyRateThrottle]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonOnly
    required_scope = ApiScope.PUSH


class NewestFirstPagination(CursorPagination):
    """Keyset pagination on the id, newest first: stable while rows are added, no counting."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500
    invalid_cursor_message = "Invalid cursor; start again without one."

    def decode_cursor(self, request: Request) -> Any:
        cursor = super().decode_cursor(request)
        position = cursor.position if cursor else None
        if position is not None and not (position.isdigit() and len(position) <= 18):
            raise NotFound(self.invalid_cursor_message)
        return cursor


class PageQuerySerializer(serializers.Serializer):
    cursor = serializers.RegexField(
        r"^[A-Za-z0-9+/=_-]{1,1000}$", required=False, help_text="Copied from `next`."
    )
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)


@functools.cache
def _query_fields(serializer_class: type[serializers.Serializer]) -> dict[str, Field]:
    # Built once per class: a serializer deep-copies its fields on every instantiation, which
    # was the largest cost of a feed request. Validating a flat query string reads no
    # per-request state from the fields, so sharing them between threads is safe.
    return dict(serializer_class().fields)


def _query(serializer_class: type[serializers.Serializer], request: Request) -> dict:
    """Validate the query string against a flat serializer's fields; 400 with every problem."""
    params, fields = request.query_params, _query_fields(serializer_class)
    errors: dict[str, Any] = {}
    for name in sorted(set(params) - set(fields)):  # most likely a typo, not to be ignored
        errors[name or "(empty name)"] = [f"Unknown parameter; allowed: {', '.join(fields)}."]
    data = {}
    for name, field in fields.items():
        raw = params.get(name, empty)
        if raw == "":  # DRF would read `?status=` as absent: here it is a mistake
            errors[name] = ["This parameter may not be blank; leave it out instead."]
            continue
        try:
            data[name] = field.run_validation(raw)
        except SkipField:
            continue
        except ValidationError as exc:
            errors[name] = exc.detail
    if errors:
        raise ValidationError(errors)
    return data


def _advertiser_or_404(advertiser_id: str) -> Advertiser:
    advertiser = None
    if len(advertiser_id) <= 64 and "\x00" not in advertiser_id:
        advertiser = selectors.advertiser_by_external_id(advertiser_id=advertiser_id)
    if advertiser is None:
        raise NotFound(f"No advertiser with advertiser_id {advertiser_id[:64]!r}.")
    return advertiser


def occurred_at_check(value: datetime, *, now: datetime | None = None) -> datetime:
    """An event time within EVENT_MAX_AGE before and EVENT_MAX_AHEAD after now."""
    now = now or timezone.now()
    earliest, latest = now - EVENT_MAX_AGE, now + EVENT_MAX_AHEAD
    if not earliest <= value <= latest:
        raise ValidationError(
            f"{json_datetime(value)} is outside the accepted window {json_datetime(earliest)} "
            f"to {json_datetime(latest)} (at most {EVENT_MAX_AGE.days} days ago, "
            f"{int(EVENT_MAX_AHEAD.total_seconds() // 60)} minutes ahead)."
        )
    return value


# --- messages ----------------------------------------------------------------------------------
#
# The message responses are spliced from PushMessage.content (JSON rendered once at production):
# a feed page of 100 costs one indexed query and string joins. The serializers below describe
# the same shape for the schema, and the schema tests check the two agree.


class MessageOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=PushMessage.Status.choices)
    lease_expires_at = serializers.DateTimeField(allow_null=True)
    task_id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    advertiser_id = serializers.CharField()
    kind = serializers.ChoiceField(choices=TaskKind.choices)
    scenario = serializers.CharField(allow_null=True, help_text="Scenario code; null: any.")
    target = serializers.DecimalField(max_digits=14, decimal_places=2)
    reward = serializers.DecimalField(max_digits=12, decimal_places=2)
    valid_from = serializers.DateField()
    valid_until = serializers.DateField(help_text="Last day of the task, inclusive.")
    body = serializers.CharField(help_text="The text to show the advertiser.")


def _message_json(pk: int, status: str, lease_expires_at: datetime | None, content: str) -> str:
    # Hot path (100 per page): no json.dumps; an ISO datetime needs no escaping.
    lease = "null" if lease_expires_at is None else f'"{json_datetime(lease_expires_at)}"'
    return f'{{"id":{pk},"status":"{status}","lease_expires_at":{lease},{content[1:]}'


def _json_response(text: str) -> HttpResponse:
    return HttpResponse(text, content_type="application/json")


class MessagePageSerializer(serializers.Serializer):
    next = serializers.URLField(help_text="Where to continue: now, or later for new messages.")
    has_more = serializers.BooleanField(help_text="Whether `next` has messages right now.")
    results = MessageOutputSerializer(many=True)


def _cursor_encode(after_id: int) -> str:
    return urlsafe_b64encode(f"after:{after_id}".encode()).decode()


def _cursor_decode(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        text = urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
    except (ValueError, UnicodeError):
        text = ""
    prefix, _, after = text.partition(":")
    if prefix != "after" or not after.isdigit() or len(after) > 18:
        raise NotFound("Invalid cursor; start again without one.")
    return int(after)


class MessageFeedApi(ApiBase):
    """Messages to push, oldest first, a page at a time.

    Follow `next` while `has_more`; later, poll the last `next` for messages added since. Ids
    grow in commit order, so the walk sees every message once, also while new ones arrive.
    """

    required_scope = ApiScope.PUSH

    class QuerySerializer(serializers.Serializer):
        cursor = serializers.RegexField(
            r"^[A-Za-z0-9_=-]{1,100}$", required=False, help_text="Copied from `next`."
        )
        page_size = serializers.IntegerField(min_value=1, max_value=500, default=100)
        status = serializers.ChoiceField(
            choices=[*PushMessage.Status.values, "all"],
            default=PushMessage.Status.PENDING,
            help_text="Which messages; `all` for every status.",
        )

    @extend_schema(
        operation_id="messages_feed",
        tags=["push"],
        parameters=[QuerySerializer],
        responses={
            200: MessagePageSerializer,
            400: FIELD_ERRORS,
            404: OpenApiResponse(ErrorOutputSerializer, description="Invalid cursor."),
            **ERRORS,
        },
    )
    def get(self, request: Request) -> HttpResponse:
        query = _query(self.QuerySerializer, request)
        after = _cursor_decode(query.get("cursor"))
        size = query["page_size"]
        rows = selectors.messages_feed_page(
            status=None if query["status"] == "all" else query["status"],
            after_id=after,
            limit=size + 1,
        )
        has_more, rows = len(rows) > size, rows[:size]
        cursor = _cursor_encode(rows[-1][0] if rows else after)
        next_url = replace_query_param(request.build_absolute_uri(), "cursor", cursor)
        results = ",".join(_message_json(*row) for row in rows)
        return _json_response(
            f'{{"next":{json.dumps(next_url)},"has_more":{json.dumps(has_more)},'
            f'"results":[{results}]}}'
        )


class MessageLeaseApi(ApiBase):
    """Take up to `max` unsent messages for `lease_seconds`; no other consumer gets them meanwhile.

    Send each, then report it with a `delivered` event; an unreported message is handed out
    again once its lease expires.
    """

    required_scope = ApiScope.PUSH

    class LeaseInputSerializer(serializers.Serializer):
        max = StrictIntegerField(min_value=1, max_value=500, default=100)
        lease_seconds = StrictIntegerField(min_value=5, max_value=3600, default=60)
        consumer = StrictCharField(
            required=False,
            allow_blank=True,
            max_length=100,
            help_text="Names this consumer in the lease owner.",
        )

    class LeaseOutputSerializer(serializers.Serializer):
        lease_owner = serializers.CharField()
        lease_expires_at = serializers.DateTimeField(allow_null=True)
        messages = MessageOutputSerializer(many=True)

    @extend_schema(
        operation_id="messages_lease",
        tags=["push"],
        request=LeaseInputSerializer,
        responses={
            200: LeaseOutputSerializer,
            400: FIELD_ERRORS,
            415: ErrorOutputSerializer,
            **ERRORS,
        },
    )
    def post(self, request: Request) -> HttpResponse:
        data = self.LeaseInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        owner = request.auth.name
        if data.validated_data.get("consumer"):
            owner = f"{owner}/{data.validated_data['consumer']}"
        messages = messages_lease(
            consumer_id=request.auth.consumer_id,
            owner=owner,
            limit=data.validated_data["max"],
            lease_seconds=data.validated_data["lease_seconds"],
        )
        expires = json_datetime(messages[0].lease_expires_at) if messages else None
        items = ",".join(
            _message_json(m.pk, m.status, m.lease_expires_at, m.content) for m in messages
        )
        return _json_response(
            f'{{"lease_owner":{json.dumps(owner)},"lease_expires_at":{json.dumps(expires)},'
            f'"messages":[{items}]}}'
        )


class MessageEventApi(ApiBase):
    """Report a `delivered`, `opened` or `accepted` event for a message; moves its task along.

    Only the consumer that holds, or last held, the message's lease may report its events
    (403 for any other); a message never leased, or withdrawn because its task was cancelled or
    expired, is 409.

    Needs an `Idempotency-Key` header: a retry with the same key and body gets the first
    answer again; the same key with another body is 422.
    """

    required_scope = ApiScope.PUSH

    class EventInputSerializer(serializers.Serializer):
        type = serializers.ChoiceField(choices=EVENT_TYPES)
        occurred_at = serializers.DateTimeField(
            required=False,
            help_text=f"When it happened (default: now); at most {EVENT_MAX_AGE.days} days ago "
            f"and {int(EVENT_MAX_AHEAD.total_seconds() // 60)} minutes ahead.",
        )

        def validate_occurred_at(self, value: datetime) -> datetime:
            return occurred_at_check(value)

    class EventOutputSerializer(serializers.Serializer):
        message_id = serializers.IntegerField()
        type = serializers.ChoiceField(choices=EVENT_TYPES)
        task_id = serializers.IntegerField()
        task_state = serializers.ChoiceField(choices=TaskState.choices)

    @extend_schema(
        operation_id="message_event_create",
        tags=["push"],
        request=EventInputSerializer,
        parameters=[
            OpenApiParameter("message_id", int, OpenApiParameter.PATH),
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=True,
                pattern=r"^[!-~]{1,200}$",
                description="A unique key per event (e.g. a UUID), reused on retries.",
            ),
        ],
        responses={
            200: EventOutputSerializer,
            400: FIELD_ERRORS,
            404: ErrorOutputSerializer,
            409: OpenApiResponse(
                ErrorOutputSerializer,
                description="The message was never leased or is withdrawn, or its task is final.",
            ),
            415: ErrorOutputSerializer,
            422: OpenApiResponse(
                ErrorOutputSerializer, description="The key was used with a different request."
            ),
            **ERRORS,
            403: OpenApiResponse(
                ErrorOutputSerializer,
                description="The key lacks the scope, or another consumer holds the lease.",
            ),
        },
    )
    def post(self, request: Request, message_id: str) -> Response:
        pk = _message_id_or_404(message_id)
        key = _idempotency_key(request)
        data = self.EventInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        event = data.validated_data

        def operation() -> tuple[int, dict]:
            (outcome,) = messages_events_apply(
                events=[EventInput(pk, event["type"], event.get("occurred_at"))],
                consumer_id=request.auth.consumer_id,
                actor=request.auth.name,
            )
            return _event_answer(outcome)

        fingerprint = request_fingerprint(method="POST", path=request.path, data=request.data)
        try:
            outcome = idempotent_execute(
                api_key=request.auth, key=key, fingerprint=fingerprint, operation=operation
            )
        except IdempotencyConflict as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
        return Response(outcome.body, status=outcome.status, headers=headers)


def _event_answer(outcome: EventOutcome) -> tuple[int, dict]:
    """The status and body of one event's outcome, as the event endpoints answer it."""
    error = outcome.error
    if error is None:
        return status.HTTP_200_OK, outcome.body
    if isinstance(error, NotLeaseHolder):
        return status.HTTP_403_FORBIDDEN, {"detail": str(error)}
    if isinstance(error, PushMessage.DoesNotExist):
        return status.HTTP_404_NOT_FOUND, {"detail": str(error)}
    return status.HTTP_409_CONFLICT, {"detail": str(error)}


MAX_BATCH_EVENTS = 500
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,200}$"


class BatchEventInputSerializer(serializers.Serializer):
    message_id = StrictIntegerField(min_value=1, max_value=10**18 - 1)
    type = serializers.ChoiceField(choices=EVENT_TYPES)
    occurred_at = serializers.DateTimeField(
        required=False, help_text="As for a single event: within the accepted window."
    )
    idempotency_key = StrictCharField(
        max_length=200,
        validators=[
            RegexValidator(IDEMPOTENCY_KEY_PATTERN, "Use 1 to 200 visible ASCII characters.")
        ],
        help_text="A unique key per event (e.g. a UUID), reused on retries.",
    )


class BatchEventResultSerializer(serializers.Serializer):
    idempotency_key = serializers.CharField()
    status = serializers.IntegerField(help_text="What the single-event endpoint would answer.")
    replayed = serializers.BooleanField()
    body = serializers.DictField(help_text="The single-event endpoint's body for this event.")


class MessageEventBatchApi(ApiBase):
    """Report up to 500 events at once, each as the single-event endpoint would take it.

    Every event carries its own `idempotency_key`: a retried batch replays the stored answers,
    and a key may be retried through either endpoint. The answer is 200 with one result per
    event, in order, each with the status and body the single-event endpoint would give (403,
    404, 409, 422, or 400 for an occurred_at outside the window); a refused event changes
    nothing, the others apply. A batch with an event that breaks the schema is refused whole
    (400, errors by event index).
    """

    required_scope = ApiScope.PUSH

    class BatchInputSerializer(serializers.Serializer):
        events = serializers.ListField(
            child=BatchEventInputSerializer(), min_length=1, max_length=MAX_BATCH_EVENTS
        )

    class BatchOutputSerializer(serializers.Serializer):
        results = BatchEventResultSerializer(many=True)

    @extend_schema(
        operation_id="message_events_batch",
        tags=["push"],
        request=BatchInputSerializer,
        responses={
            200: BatchOutputSerializer,
            400: FIELD_ERRORS,
            415: ErrorOutputSerializer,
            **ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        items = _batch_events(request.data)
        fields = _query_fields(BatchEventInputSerializer)
        checked = [_batch_event_validate(raw, fields) for raw in items]
        invalid = {i: errors for i, (_, errors) in enumerate(checked) if errors}
        if invalid:  # the batch is refused whole: nothing of it is stored
            raise ValidationError({"events": invalid})
        template = _single_event_path()
        results: list[dict | None] = []
        todo: list[tuple[str, str, EventInput]] = []
        for raw, (event, _) in zip(items, checked, strict=True):
            key = raw["idempotency_key"]
            try:  # the time window is not in the schema: one event's 400, not the batch's
                if event.occurred_at is not None:
                    occurred_at_check(event.occurred_at)
            except ValidationError as exc:
                body = {"occurred_at": exc.detail}
                results.append(
                    {"idempotency_key": key, "status": 400, "replayed": False, "body": body}
                )
                continue
            single_body = {
                k: v for k, v in raw.items() if k not in ("message_id", "idempotency_key")
            }
            fingerprint = request_fingerprint(
                method="POST", path=template.format(event.message_id), data=single_body
            )
            todo.append((key, fingerprint, event))
            results.append(None)
        answers = iter(
            messages_events_record_batch(
                api_key=request.auth, events=todo, actor=request.auth.name, answer=_event_answer
            )
            if todo
            else []
        )
        keys = iter(key for key, _, _ in todo)
        for i, result in enumerate(results):
            if result is None:
                answer = next(answers)
                results[i] = {
                    "idempotency_key": next(keys),
                    "status": answer.status,
                    "replayed": answer.replayed,
                    "body": answer.body,
                }
        return Response({"results": results})


@functools.cache
def _single_event_path() -> str:
    return reverse("message-events", kwargs={"message_id": "0"}).replace("/0/", "/{}/")


def _batch_events(data: Any) -> list:
    """The batch's list of events; a 400 naming what is wrong with the batch as a whole."""
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ['Send an object: {"events": [...]}.']})
    events = data.get("events")
    if not isinstance(events, list):
        raise ValidationError({"events": ["This field is required: a list of events."]})
    if not 1 <= len(events) <= MAX_BATCH_EVENTS:
        raise ValidationError(
            {"events": [f"Send 1 to {MAX_BATCH_EVENTS} events; got {len(events)}."]}
        )
    keys = [e.get("idempotency_key") for e in events if isinstance(e, dict)]
    seen, repeated = set(), []
    for key in keys:
        if isinstance(key, str) and key in seen:
            repeated.append(key)
        seen.add(key if isinstance(key, str) else None)
    if repeated:
        shown = ", ".join(repr(k) for k in repeated[:5])
        raise ValidationError(
            {"events": [f"Each event needs its own idempotency_key; repeated: {shown}."]}
        )
    return events


_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_EVENT_TYPE_SET = frozenset(EVENT_TYPES)
_MAX_MESSAGE_ID = 10**18 - 1


def _batch_event_plain(raw: Any) -> EventInput | None:
    """The common event, checked without DRF's per-field machinery: an integer id, a known type,
    a valid key and no occurred_at. None sends it through the fields (which also word errors);
    whatever passes here passes there with the same values."""
    if type(raw) is not dict or "occurred_at" in raw:
        return None
    message_id, event_type, key = raw.get("message_id"), raw.get("type"), raw.get("idempotency_key")
    if type(message_id) is not int or not 1 <= message_id <= _MAX_MESSAGE_ID:
        return None
    if type(event_type) is not str or event_type not in _EVENT_TYPE_SET:
        return None
    if type(key) is not str or _KEY.fullmatch(key) is None:
        return None
    return EventInput(message_id=message_id, event_type=event_type, occurred_at=None)


def _batch_event_validate(raw: Any, fields: dict[str, Field]) -> tuple[EventInput | None, dict]:
    plain = _batch_event_plain(raw)
    if plain is not None:
        return plain, {}
    if not isinstance(raw, dict):
        return None, {"non_field_errors": ["Each event must be an object."]}
    errors: dict[str, Any] = {}  # other fields are ignored, as DRF's serializers do
    data = {}
    for name, field in fields.items():
        try:
            data[name] = field.run_validation(raw.get(name, empty))
        except SkipField:
            continue
        except ValidationError as exc:
            errors[name] = exc.detail
    if errors:
        return None, errors
    return EventInput(
        message_id=data["message_id"], event_type=data["type"], occurred_at=data.get("occurred_at")
    ), {}


def _message_id_or_404(message_id: str) -> int:
    if not (message_id.isdigit() and len(message_id) <= 18 and int(message_id) > 0):
        raise NotFound("No such message: ids are positive integers.")
    return int(message_id)


def _idempotency_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    if not key:
        raise ValidationError({IDEMPOTENCY_HEADER: ["This header is required (e.g. a UUID)."]})
    if len(key) > 200 or not all("!" <= ch <= "~" for ch in key):
        raise ValidationError(
            {IDEMPOTENCY_HEADER: ["Use 1 to 200 visible ASCII characters (e.g. a UUID)."]}
        )
    return key


# --- advertisers -------------------------------------------------------------------------------


class TaskOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    campaign_id = serializers.IntegerField()
    campaign = serializers.CharField(source="campaign.name")
    kind = serializers.ChoiceField(choices=TaskKind.choices)
    scenario = serializers.CharField(source="scenario.code", allow_null=True)
    state = serializers.ChoiceField(choices=TaskState.choices)
    target = serializers.DecimalField(max_digits=14, decimal_places=2)
    reward = serializers.DecimalField(max_digits=12, decimal_places=2)
    progress = serializers.DecimalField(
        max_digits=16, decimal_places=2, help_text="Measured now over the validity window."
    )
    valid_from = serializers.DateField()
    valid_until = serializers.DateField()
    created_at = serializers.DateTimeField()
    pushed_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    accepted_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    expired_at = serializers.DateTimeField(allow_null=True)
    cancelled_at = serializers.DateTimeField(allow_null=True)


class TaskPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = TaskOutputSerializer(many=True)


class AdvertiserTasksApi(ApiBase):
    """An advertiser's tasks, newest first, with their state and live progress."""

    required_scope = ApiScope.OPS

    class QuerySerializer(PageQuerySerializer):
        state = serializers.ChoiceField(choices=TaskState.choices, required=False)

    @extend_schema(
        operation_id="advertiser_tasks_list",
        tags=["ops"],
        parameters=[QuerySerializer],
        responses={
            200: TaskPageSerializer,
            400: FIELD_ERRORS,
            404: OpenApiResponse(
                ErrorOutputSerializer, description="No such advertiser or cursor."
            ),
            **ERRORS,
        },
    )
    def get(self, request: Request, advertiser_id: str) -> Response:
        query = _query(self.QuerySerializer, request)
        advertiser = _advertiser_or_404(advertiser_id)
        tasks = selectors.advertiser_tasks(advertiser=advertiser, state=query.get("state"))
        paginator = NewestFirstPagination()
        page: list[IncentiveTask] = paginator.paginate_queryset(tasks, request, view=self) or []
        progress = selectors.tasks_progress(task_ids=[t.pk for t in page])
        for task in page:
            task.progress = progress[task.pk].progress
        return paginator.get_paginated_response(TaskOutputSerializer(page, many=True).data)


class PredictionOutputSerializer(serializers.Serializer):
    model_version = serializers.IntegerField(source="model_version_id")
    model_kind = serializers.ChoiceField(choices=ModelKind.choices, source="model_version.kind")
    as_of = serializers.DateField()
    horizon_days = serializers.IntegerField()
    scenario = serializers.CharField(source="scenario.code")
    clicks = serializers.FloatField()
    expenditure = serializers.FloatField()
    active_days = serializers.FloatField()
    impressions = serializers.FloatField()
    gmv = serializers.FloatField()
    p_inactive = serializers.FloatField(
        allow_null=True, help_text="P(no active day in the horizon); null without the head."
    )
    expenditure_p10 = serializers.FloatField(allow_null=True, help_text="80% interval, low end.")
    expenditure_p90 = serializers.FloatField(allow_null=True, help_text="80% interval, high end.")
    clicks_p10 = serializers.FloatField(allow_null=True, help_text="80% interval, low end.")
    clicks_p90 = serializers.FloatField(allow_null=True, help_text="80% interval, high end.")


class InactivityOutputSerializer(serializers.Serializer):
    model_version = serializers.IntegerField()
    model_kind = serializers.ChoiceField(choices=ModelKind.choices)
    as_of = serializers.DateField()
    scenarios = serializers.IntegerField(help_text="Scenarios the product is over.")
    p_inactive_all = serializers.FloatField(
        allow_null=True,
        help_text="P(no active day in any scenario over the horizon): the product of the"
        " scenarios' P(inactive), taken as independent given the forecast; null when a"
        " scenario has none.",
    )


class AdvertiserPredictionsApi(ApiBase):
    """The advertiser's latest predictions of each model in use (one row per scenario)."""

    required_scope = ApiScope.OPS

    class QuerySerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=ModelKind.choices, required=False)

    class PredictionsOutputSerializer(serializers.Serializer):
        advertiser_id = serializers.CharField()
        predictions = PredictionOutputSerializer(many=True)
        inactivity = InactivityOutputSerializer(many=True)

    @extend_schema(
        operation_id="advertiser_predictions_list",
        tags=["ops"],
        parameters=[QuerySerializer],
        responses={
            200: PredictionsOutputSerializer,
            400: FIELD_ERRORS,
            404: ErrorOutputSerializer,
            **ERRORS,
        },
    )
    def get(self, request: Request, advertiser_id: str) -> Response:
        query = _query(self.QuerySerializer, request)
        advertiser = _advertiser_or_404(advertiser_id)
        predictions = selectors.advertiser_predictions_latest(
            advertiser=advertiser, kind=query.get("kind")
        )
        output = {
            "advertiser_id": advertiser.advertiser_id,
            "predictions": predictions,
            "inactivity": selectors.inactivity_everywhere(predictions),
        }
        return Response(self.PredictionsOutputSerializer(output).data)

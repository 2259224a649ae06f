"""Routes of the push-message API; mounted under /api/v1/ by incentive_platform.api_urls."""

from django.urls import path

from campaigns import api

urlpatterns = [
    path("messages", api.MessageFeedApi.as_view(), name="messages-feed"),
    path("messages/lease", api.MessageLeaseApi.as_view(), name="messages-lease"),
    path("messages/events", api.MessageEventBatchApi.as_view(), name="message-events-batch"),
    # The id is checked in the view, so a malformed one gets a JSON 404 like any other.
    path("messages/<str:message_id>/events", api.MessageEventApi.as_view(), name="message-events"),
    path(
        "advertisers/<str:advertiser_id>/tasks",
        api.AdvertiserTasksApi.as_view(),
        name="advertiser-tasks",
    ),
    path(
        "advertisers/<str:advertiser_id>/predictions",
        api.AdvertiserPredictionsApi.as_view(),
        name="advertiser-predictions",
    ),
]

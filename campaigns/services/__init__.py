"""Every write of the campaigns app, one module per concern, re-exported here.

- budget: the ledger and the "never over budget" invariant
- tasks: task state changes (the table lives in campaigns.lifecycle)
- production: selecting advertisers and creating their tasks
- settlement: completing and expiring tasks
- campaigns: draft -> scheduled -> running -> closed
- templates, api_keys, push, idempotency: the rest
"""

from campaigns.services.api_keys import api_key_create, api_key_revoke
from campaigns.services.budget import (
    BudgetExceeded,
    BudgetInconsistent,
    budget_release,
    budget_reserve,
    budget_settle,
)
from campaigns.services.campaigns import (
    CampaignStateError,
    TickResult,
    campaign_close,
    campaign_create,
    campaign_launch,
    campaign_pause,
    campaign_resume,
    campaign_templates_validate,
    campaigns_schedule_tick,
)
from campaigns.services.idempotency import (
    IdempotencyConflict,
    IdempotentResponse,
    idempotency_records_purge,
    idempotent_execute,
    request_fingerprint,
)
from campaigns.services.production import (
    ProductionError,
    ProductionResult,
    campaign_produce,
    round_nice,
)
from campaigns.services.push import message_event_record, messages_lease
from campaigns.services.settlement import SettlementResult, tasks_settle
from campaigns.services.tasks import (
    TransitionBatch,
    task_advance,
    task_transition,
    tasks_transition_bulk,
)
from campaigns.services.templates import (
    TemplateError,
    template_create,
    template_update,
    templates_default_ensure,
)
from campaigns.services.uplift import uplift_model_train

__all__ = [
    "BudgetExceeded",
    "BudgetInconsistent",
    "CampaignStateError",
    "IdempotencyConflict",
    "IdempotentResponse",
    "ProductionError",
    "ProductionResult",
    "SettlementResult",
    "TemplateError",
    "TickResult",
    "TransitionBatch",
    "api_key_create",
    "api_key_revoke",
    "budget_release",
    "budget_reserve",
    "budget_settle",
    "campaign_close",
    "campaign_create",
    "campaign_launch",
    "campaign_pause",
    "campaign_produce",
    "campaign_resume",
    "campaign_templates_validate",
    "campaigns_schedule_tick",
    "idempotency_records_purge",
    "idempotent_execute",
    "message_event_record",
    "messages_lease",
    "request_fingerprint",
    "round_nice",
    "task_advance",
    "task_transition",
    "tasks_settle",
    "tasks_transition_bulk",
    "template_create",
    "template_update",
    "templates_default_ensure",
    "uplift_model_train",
]

"""Task templates: create, edit (a new version once used) and the default set."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.db import transaction

from advertisers.models import Scenario
from campaigns.models import IncentiveTask, TaskKind, TaskTemplate

EDITABLE_FIELDS = (
    "name",
    "kind",
    "scenario",
    "reward_type",
    "reward_value",
    "minimum_target",
    "stretch",
    "validity_days",
    "message_text",
)


class TemplateError(Exception):
    """An edit that cannot be applied; the message names the template and the fix."""


def template_create(
    *,
    name: str,
    kind: str,
    reward_value: Decimal,
    minimum_target: Decimal,
    message_text: str,
    reward_type: str = TaskTemplate.RewardType.FIXED,
    scenario: Scenario | None = None,
    stretch: Decimal = Decimal("0.20"),
    validity_days: int = 7,
    family: uuid.UUID | None = None,
) -> TaskTemplate:
    template = TaskTemplate(
        name=name,
        kind=kind,
        scenario=scenario,
        reward_type=reward_type,
        reward_value=reward_value,
        minimum_target=minimum_target,
        stretch=stretch,
        validity_days=validity_days,
        message_text=message_text,
    )
    if family is not None:
        template.family = family
    template.full_clean()
    template.save()
    return template


def template_update(*, template: TaskTemplate, changes: dict[str, Any]) -> TaskTemplate:
    """Apply `changes`; returns the template to use from now on.

    An unused template is edited in place. One that a task used stays as it is (the task keeps
    its terms) and a new current version of the same family carries the changes.
    """
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise TemplateError(f"Fields {unknown} cannot be edited; editable: {EDITABLE_FIELDS}.")
    with transaction.atomic():
        current = TaskTemplate.objects.select_for_update().get(pk=template.pk)
        if not current.is_current:
            raise TemplateError(
                f"{current} is an old version of its template; edit the current version instead."
            )
        if not IncentiveTask.objects.filter(template=current).exists():
            return _apply(current, changes)
        TaskTemplate.objects.filter(pk=current.pk).update(is_current=False)
        successor = TaskTemplate(
            family=current.family,
            version=current.version + 1,
            **{name: getattr(current, name) for name in EDITABLE_FIELDS},
        )
        return _apply(successor, changes)


def _apply(template: TaskTemplate, changes: dict[str, Any]) -> TaskTemplate:
    for name, value in changes.items():
        setattr(template, name, value)
    template.full_clean(validate_unique=False, validate_constraints=False)
    template.save()
    return template


# Fixed family ids make templates_default_ensure idempotent and let edits of a default survive.
_DEFAULTS = (
    {
        "family": uuid.UUID("6b0f5c8e-7a39-4d4e-9a51-1f1e0c1d0001"),
        "name": "Spend stretch",
        "kind": TaskKind.SPEND,
        "reward_type": TaskTemplate.RewardType.PERCENT,
        "reward_value": Decimal("10"),
        "minimum_target": Decimal("50"),
        "stretch": Decimal("0.20"),
        "message_text": "Spend {target} in {scenario} by {valid_until} and earn a {reward} coupon.",
    },
    {
        "family": uuid.UUID("6b0f5c8e-7a39-4d4e-9a51-1f1e0c1d0002"),
        "name": "Active days",
        "kind": TaskKind.ACTIVE_DAYS,
        "reward_type": TaskTemplate.RewardType.FIXED,
        "reward_value": Decimal("20"),
        "minimum_target": Decimal("2"),
        "stretch": Decimal("0.30"),
        "message_text": "Advertise in {scenario} on {target} of the next {days} days "
        "(until {valid_until}) and earn a {reward} coupon.",
    },
    {
        "family": uuid.UUID("6b0f5c8e-7a39-4d4e-9a51-1f1e0c1d0003"),
        "name": "Come back",
        "kind": TaskKind.LOGIN_DAYS,
        "reward_type": TaskTemplate.RewardType.FIXED,
        "reward_value": Decimal("5"),
        "minimum_target": Decimal("3"),
        "stretch": Decimal("0"),
        "message_text": "Log in on {target} days before {valid_until} and earn a {reward} coupon.",
    },
)


def templates_default_ensure() -> list[TaskTemplate]:
    """The current versions of the default templates, created on first use."""
    templates = []
    with transaction.atomic():
        for spec in _DEFAULTS:
            current = TaskTemplate.objects.filter(family=spec["family"], is_current=True).first()
            templates.append(current or template_create(**spec))
    return templates

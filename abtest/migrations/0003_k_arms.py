"""k arms: a position per arm, unique names, exactly one control, model only where needed."""

from django.db import migrations, models


def positions_fill(apps, schema_editor) -> None:
    """Two-arm experiments: control keeps 0, treatment gets 1 (and a distinct name if shared)."""
    Arm = apps.get_model("abtest", "Arm")
    for arm in Arm.objects.filter(role="treatment"):
        arm.position = 1
        if Arm.objects.filter(experiment_id=arm.experiment_id, role="control", name=arm.name):
            arm.name = f"{arm.name}-treatment"
        arm.save(update_fields=["position", "name"])


class Migration(migrations.Migration):
    dependencies = [
        ("abtest", "0002_arm_targeting"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="arm",
            options={"ordering": ["experiment", "position"]},
        ),
        migrations.RemoveConstraint(
            model_name="arm",
            name="arm_one_per_role",
        ),
        migrations.RemoveConstraint(
            model_name="arm",
            name="arm_has_model",
        ),
        migrations.AddField(
            model_name="arm",
            name="position",
            field=models.PositiveSmallIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(positions_fill, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="arm",
            constraint=models.UniqueConstraint(
                fields=("experiment", "name"), name="arm_unique_name"
            ),
        ),
        migrations.AddConstraint(
            model_name="arm",
            constraint=models.UniqueConstraint(
                fields=("experiment", "position"), name="arm_unique_position"
            ),
        ),
        migrations.AddConstraint(
            model_name="arm",
            constraint=models.UniqueConstraint(
                condition=models.Q(("role", "control")),
                fields=("experiment",),
                name="arm_one_control",
            ),
        ),
        migrations.AddConstraint(
            model_name="arm",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("model_kind", ""), _negated=True),
                    ("model_version__isnull", False),
                    ("targeting__in", ["none", "external"]),
                    _connector="OR",
                ),
                name="arm_has_model",
            ),
        ),
    ]

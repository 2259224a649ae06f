"""API consumers own keys and leases; messages of cancelled or expired tasks are withdrawn."""

import django.db.models.deletion
from django.db import migrations, models


def consumers_for_existing_keys(apps, schema_editor):
    # Each existing key becomes its own consumer, named like the key (unique names: suffixed).
    ApiConsumer = apps.get_model("campaigns", "ApiConsumer")
    ApiKey = apps.get_model("campaigns", "ApiKey")
    PushMessage = apps.get_model("campaigns", "PushMessage")
    for api_key in ApiKey.objects.order_by("pk"):
        name = api_key.name
        if ApiConsumer.objects.filter(name=name).exists():
            name = f"{name} ({api_key.prefix})"
        api_key.consumer = ApiConsumer.objects.create(name=name)
        api_key.save(update_fields=["consumer"])
    PushMessage.objects.filter(task__state__in=["expired", "cancelled"]).update(
        status="withdrawn", lease_expires_at=None
    )


class Migration(migrations.Migration):

    dependencies = [
        ("campaigns", "0003_holdout_uplift"),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiConsumer",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"verbose_name": "API consumer", "ordering": ["name"]},
        ),
        migrations.AddField(
            model_name="apikey",
            name="consumer",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="keys",
                to="campaigns.apiconsumer",
            ),
        ),
        migrations.AddField(
            model_name="pushmessage",
            name="lease_consumer",
            field=models.ForeignKey(
                blank=True,
                help_text="The consumer that holds, or last held, the lease: the only one whose "
                "events count.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="campaigns.apiconsumer",
            ),
        ),
        migrations.AddField(
            model_name="pushmessage",
            name="withdrawn_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="pushmessage",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("leased", "Leased"),
                    ("sent", "Sent"),
                    ("withdrawn", "Withdrawn"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.RunPython(consumers_for_existing_keys, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="apikey",
            name="consumer",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="keys",
                to="campaigns.apiconsumer",
            ),
        ),
    ]

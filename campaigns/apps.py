from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns"

    def ready(self) -> None:
        from campaigns.api_selectors import api_key_forget
        from campaigns.models import ApiKey

        def forget(sender: type, instance: ApiKey, **kwargs: object) -> None:
            # Any change of a key (deactivated in the admin, say) reaches every process at once.
            api_key_forget(secret_hash=instance.secret_hash)

        post_save.connect(forget, sender=ApiKey, weak=False, dispatch_uid="api_key_forget_save")
        post_delete.connect(forget, sender=ApiKey, weak=False, dispatch_uid="api_key_forget_del")

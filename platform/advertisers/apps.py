from django.apps import AppConfig


class AdvertisersConfig(AppConfig):
    name = "advertisers"
    verbose_name = "Advertisers and scenarios"

from django.apps import AppConfig


class AbtestConfig(AppConfig):
    name = "abtest"
    verbose_name = "A/B experiments"

"""The Celery app, configured from Django settings (CELERY_ namespace).

Named celery_app.py, not celery.py: a module called `celery` on a package root would shadow
the library itself.
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "incentive_platform.settings")

app = Celery("incentive_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Two queues: CPU work on `default`, model training and scoring on `gpu` (one worker per GPU).
app.conf.task_queues = (Queue("default"), Queue("gpu"))
app.autodiscover_tasks()

"""One settings module, driven by environment variables.

With nothing set, everything runs embedded on one machine: SQLite and Celery in eager mode.
DEBUG is off unless DEBUG=1: the one switch for development and the embedded demo
(scripts/demo.py sets it), which then also generates a throwaway secret. With DEBUG off a
missing SECRET_KEY stops the start. Production sets DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY
and ALLOWED_HOSTS. Any variable may also be read from a file named by `<NAME>_FILE` (Docker
secrets).
"""

import os
import secrets
import warnings
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parents[2]


def env(name: str, default: str = "") -> str:
    """The variable's value, from <NAME>_FILE if set; empty counts as unset (`VAR= make ...`)."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        return Path(file_path).read_text().strip()
    return os.environ.get(name) or default


def envbool(name: str, default: str) -> bool:
    return env(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: str) -> int:
    return int(env(name, default))


# Off unless asked for: a forgotten variable must not serve tracebacks and settings pages.
DEBUG = envbool("DEBUG", "0")
SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set and DEBUG is off: refusing to start. "
            "Set SECRET_KEY (or SECRET_KEY_FILE) to a long random string, "
            "or DEBUG=1 for development."
        )
    SECRET_KEY = "dev-only-" + secrets.token_urlsafe(32)

ALLOWED_HOSTS = [
    h.strip() for h in env("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()
]

# Where trained model artifacts and uploaded files are kept.
VAR_DIR = Path(env("VAR_DIR", str(BASE_DIR / "var")))
ARTIFACT_DIR = Path(env("ARTIFACT_DIR", str(VAR_DIR / "artifacts")))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "advertisers",
    "predictor",
    "campaigns",
    "abtest",
    "lab",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before the rest: its process_exception answers the API's unhandled errors in JSON.
    "incentive_platform.middleware.ApiErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "incentive_platform.urls"
WSGI_APPLICATION = "incentive_platform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", "60"),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the admin read while a demo ingests; the timeout rides out short write locks.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL;"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        # A fresh checkout has no var/ yet; SQLite would say only "unable to open database file".
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)

# --- Artifacts next to an embedded database -----------------------------------------------
# A SQLite database and the model files its versions point to belong together: unless
# ARTIFACT_DIR is set, they live in `artifacts/` beside the database file (`var/db.sqlite3` ->
# `var/artifacts`, the demo's `var/demo/demo.sqlite3` -> `var/demo/artifacts`).
if (
    not env("ARTIFACT_DIR")
    and DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
    and DATABASES["default"]["NAME"] not in ("", ":memory:")
):
    ARTIFACT_DIR = Path(DATABASES["default"]["NAME"]).resolve().parent / "artifacts"
# --- end artifacts --------------------------------------------------------------------------

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_ROOT = VAR_DIR / "media"
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "rest_framework.views.exception_handler",
    # Per API key (campaigns.auth); a push consumer polls often, a bad one is held back.
    "DEFAULT_THROTTLE_RATES": {"api_key": env("API_KEY_RATE", "6000/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Incentive platform API",
    "DESCRIPTION": "Incentive tasks for the push-message system, predictions, experiment reports.",
    "VERSION": "1.0.0",
    # Public by decision (README, "The push API"): shapes only; every operation needs a key.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_INCLUDE_SCHEMA": False,
    # Two apps have a `type`/`state` field; name their enums so the schema stays unambiguous.
    "ENUM_NAME_OVERRIDES": {
        "TaskStateEnum": "campaigns.models.TaskState",
        "PushEventTypeEnum": "campaigns.api.EVENT_TYPES",
    },
}

# --- API docs, served offline -------------------------------------------------------------
# Swagger UI and Redoc come from the drf-spectacular-sidecar package's static files, never a CDN.
INSTALLED_APPS += ["drf_spectacular_sidecar"]
SPECTACULAR_SETTINGS |= {
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Swagger UI's default validator badge is an image from validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}
# The Redoc page without the stock template's Google Fonts links (templates/api_docs/).
TEMPLATES[0]["DIRS"] = [*TEMPLATES[0]["DIRS"], Path(__file__).resolve().parent / "templates"]
# --- end API docs ---------------------------------------------------------------------------

# --- Celery (DESIGN section 6) -------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL")

# The cache holds API keys and rate-limit counters, so it must be shared by every server
# process: CACHE_URL (Redis), by default the broker when that is Redis. Without either, the
# embedded default keeps a per-process memory cache.
CACHE_URL = env(
    "CACHE_URL",
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "",
)
if CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", "incentive"),
            # A cache that is down must fail a request fast (a JSON 503), not hang it.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# No broker configured: run tasks inline, so the embedded default needs no servers.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", CELERY_BROKER_URL or "cache+memory://")
CELERY_TASK_DEFAULT_QUEUE = "default"
# Long GPU jobs: a task is acknowledged only when done, and re-queued if its worker dies.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One task at a time per process, so a long training job does not hold others hostage.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Training and scoring go to the `gpu` queue (one worker per GPU); everything else to `default`.
CELERY_TASK_ROUTES = {
    f"predictor.tasks.{name}": {"queue": "gpu"}
    for name in (
        "train_model",
        "predict_chunk",
        "predict_finish",
        "predict_failed",
        "evaluate_version",
    )
}
CELERY_BEAT_SCHEDULE: dict = {
    "predictor-score-daily": {
        "task": "predictor.tasks.predict_daily",
        "schedule": crontab(hour=3, minute=0),
        "options": {"queue": "default"},
    },
    "campaigns-settle": {"task": "campaigns.settle", "schedule": 3600.0},
    "campaigns-schedule-tick": {"task": "campaigns.schedule_tick", "schedule": 300.0},
    "campaigns-idempotency-purge": {"task": "campaigns.idempotency_purge", "schedule": 86400.0},
}

# --- Logging, errors and static files in production ------------------------------------
# LOG_FORMAT=json: one JSON object per line (incentive_platform.log_format); plain otherwise.
LOG_FORMAT = env("LOG_FORMAT", "plain").strip().lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "incentive_platform.log_format.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# SENTRY_DSN set: errors of the web app and the Celery workers go to Sentry (sentry-sdk finds
# its Django and Celery integrations itself). No personal data is sent.
SENTRY_DSN = env("SENTRY_DSN")
if SENTRY_DSN:
    import sentry_sdk

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        environment=env("SENTRY_ENVIRONMENT", "production"),
        traces_sample_rate=float(env("SENTRY_TRACES_SAMPLE_RATE", "0")),
        send_default_pii=False,
    )

# Static files (the admin's, Swagger UI's and Redoc's) are served by the app itself with DEBUG
# off too: whitenoise, right after the security middleware. It finds them in the apps, so
# `collectstatic` is an optimisation (compressed copies in STATIC_ROOT), not a requirement.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "whitenoise.middleware.WhiteNoiseMiddleware",
)
WHITENOISE_USE_FINDERS = True
# Before any collectstatic STATIC_ROOT does not exist; the finders serve everything meanwhile.
warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# --- end logging, errors and static files ---------------------------------------------------

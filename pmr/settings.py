"""PMR settings: everything comes from the environment (see the README's table).

The defaults run on a laptop with no servers: SQLite, a filesystem message broker,
media under ./var. Production sets DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY and
ALLOWED_HOSTS (see .env.example).

Longer than the other modules on purpose: every setting lives here, grouped by topic, each
read from the environment with its default and checked at start-up, in the order of the
README's configuration table.
"""

import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from core.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PMR_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY", default_file=VAR_DIR / "secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS. Behind a TLS-terminating proxy that sets X-Forwarded-Proto, set
# SECURE_PROXY_SSL_HEADER=true (and only then: the header is trusted as sent).
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes over plain HTTP
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
PORT = env_int("PORT", 8000, minimum=1, maximum=65535)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "storages",
    "detection",  # migrations only: older databases upgrade through it
    "jobs",
    "images",
    "videos",
    "review",
    "compat",
]

MIDDLEWARE = [
    "core.metrics.MetricsMiddleware",
    "core.middleware.DrainUnreadBodyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.UploadLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.errors.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "pmr.urls"
WSGI_APPLICATION = "pmr.wsgi.application"

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

# --- Database -----------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL={DATABASE_URL!r}: {exc}") from exc
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A connection pool per process: web threads and worker threads (Celery closes the
    # connection after every task) take a live connection instead of opening one.
    # Connections are checked as they are handed out, so that a dropped database
    # connection costs one failed request at most, not one per pooled connection.
    # A connection that cannot be made is retried with a doubling delay; giving up after
    # 5 s (psycopg_pool's default is 5 minutes, by when the delay has grown to minutes)
    # lets the next request start a fresh attempt at once, so that the service is back
    # within a request of the database coming back.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # the pool checks each connection
    DATABASES["default"]["OPTIONS"] = {"pool": {
        "min_size": 2, "max_size": env_int("DATABASE_POOL_SIZE", 20, minimum=1),
        "timeout": 5, "reconnect_timeout": 5}}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker processes share the file: WAL lets readers and one writer overlap,
    # IMMEDIATE transactions queue writers instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Files ----------------------------------------------------------------------------
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
STATIC_URL = "/static/"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True  # the admin's assets are served even before collectstatic
# Uploads and outputs: local files, or an S3-compatible object store that web processes
# and workers on several hosts share (MinIO in docker-compose's "s3" profile).
STORAGE_BACKEND = env_choice("STORAGE_BACKEND", "local", ("local", "s3"))
if STORAGE_BACKEND == "s3":
    DEFAULT_STORAGE = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": env_str("S3_BUCKET", "pmr"),
        "endpoint_url": env_str("S3_ENDPOINT_URL", "") or None,
        "access_key": env_secret("S3_ACCESS_KEY_ID"),
        "secret_key": env_secret("S3_SECRET_ACCESS_KEY"),
        "region_name": env_str("S3_REGION", "us-east-1"),
        "file_overwrite": False,
        "default_acl": None,
        "querystring_auth": True,  # uploads are private: workers get presigned URLs
        "addressing_style": env_choice("S3_ADDRESSING_STYLE", "path", ("path", "virtual")),
        "signature_version": "s3v4",
    }}
else:
    DEFAULT_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": DEFAULT_STORAGE,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Uploads larger than this are streamed to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("FILE_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024, minimum=0)
MAX_IMAGE_UPLOAD_BYTES = env_int("MAX_IMAGE_UPLOAD_BYTES", 20 * 1024 * 1024, minimum=1)
MAX_IMAGE_PIXELS = env_int("MAX_IMAGE_PIXELS", 100_000_000, minimum=1)
# Non-file request bodies (the Rekognition API's JSON carries images as base64: a 5 MB
# image is a ~7 MB body).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024,
                                      minimum=1024)
MAX_VIDEO_UPLOAD_BYTES = env_int("MAX_VIDEO_UPLOAD_BYTES", 2 * 1024**3, minimum=1)
MAX_VIDEO_PIXELS = env_int("MAX_VIDEO_PIXELS", 3840 * 2160, minimum=1)  # per frame
MAX_VIDEO_FRAMES = env_int("MAX_VIDEO_FRAMES", 1_000_000, minimum=1)
MAX_VIDEO_DURATION_SECONDS = env_float("MAX_VIDEO_DURATION_SECONDS", 4 * 3600, minimum=1)
MAX_VIDEO_FPS = env_float("MAX_VIDEO_FPS", 240, minimum=1)
# Upload endpoints and their limits, checked against Content-Length before reading.
UPLOAD_LIMITS = {"/api/detect/image": MAX_IMAGE_UPLOAD_BYTES,
                 "/api/detect/video": MAX_VIDEO_UPLOAD_BYTES,
                 "/v1/vision/detection": MAX_IMAGE_UPLOAD_BYTES,
                 "/v1/vision/custom/": MAX_IMAGE_UPLOAD_BYTES}  # (a prefix: each model's)

# --- Detector ---------------------------------------------------------------------------
WEIGHTS_DIR = Path(env_str("WEIGHTS_DIR", str(BASE_DIR / "weights")))
# The model a request naming none runs: a built-in one (yolov3-tiny, yolov3, yolov3-spp)
# or one uploaded to the registry (POST /api/models), by name (its default version).
DETECTOR_MODEL = env_str("DETECTOR_MODEL", "yolov3-tiny")
if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", DETECTOR_MODEL):
    raise ImproperlyConfigured(f"DETECTOR_MODEL={DETECTOR_MODEL!r}: not a model's name")
# Uploaded models' files, copied from storage on a worker's first use (checked by sha256).
MODEL_CACHE_DIR = Path(env_str("MODEL_CACHE_DIR", str(VAR_DIR / "model-cache")))
# Models a worker keeps loaded at once; the one used longest ago is let go past this.
MAX_LOADED_MODELS = env_int("MAX_LOADED_MODELS", 4, minimum=1)
# The largest model upload (cfg, weights and names together) POST /api/models takes.
MAX_MODEL_UPLOAD_BYTES = env_int("MAX_MODEL_UPLOAD_BYTES", 1024**3, minimum=1024)
UPLOAD_LIMITS["/api/models"] = MAX_MODEL_UPLOAD_BYTES
DETECTOR_DEVICE = env_str("DETECTOR_DEVICE", "auto")
if DETECTOR_DEVICE not in ("auto", "cpu", "cuda") and not DETECTOR_DEVICE.startswith("cuda:"):
    raise ImproperlyConfigured(f"DETECTOR_DEVICE={DETECTOR_DEVICE!r}: expected auto, cpu, cuda "
                               "or cuda:N")
DETECTOR_PRECISION = env_choice("DETECTOR_PRECISION", "auto",
                                ("auto", "fp32", "bf16", "fp16", "int8"))
# What runs the forward pass (engine.runtimes; auto: the rule in engine.detector.resolve_runtime).
DETECTOR_RUNTIME = env_choice("DETECTOR_RUNTIME", "auto",
                              ("auto", "torch", "openvino", "onnxruntime"))
DETECTOR_INPUT_SIZE = env_int("DETECTOR_INPUT_SIZE", 0, minimum=0)  # 0: the cfg's size
if DETECTOR_INPUT_SIZE % 32:
    raise ImproperlyConfigured(f"DETECTOR_INPUT_SIZE={DETECTOR_INPUT_SIZE}: must be a multiple "
                               "of 32 (or 0 for the cfg's size)")
# CPU threads for inference in a worker (0: one per core), and the worker's CPU priority
# (a positive nice value makes, e.g., video workers yield to image workers on one host).
DETECTOR_THREADS = env_int("DETECTOR_THREADS", 0, minimum=0)
WORKER_NICE = env_int("WORKER_NICE", 0, minimum=0, maximum=19)
# Forward passes a worker runs at once (OpenVINO's streams; 0: auto, 2 on a CPU with two
# threads or more, else 1; see jobs/inference.py).
DETECTOR_STREAMS = env_int("DETECTOR_STREAMS", 0, minimum=0, maximum=64)
# Images per forward pass (0: auto, 4 on a CPU, 8 on a GPU; see jobs/inference.py).
DETECTOR_MAX_BATCH = env_int("DETECTOR_MAX_BATCH", 0, minimum=0, maximum=256)
# How long the first request of a batch waits for more (0: batch only what is already
# queued, which under load is plenty, and a lone request never waits).
DETECTOR_BATCH_WAIT_MS = env_float("DETECTOR_BATCH_WAIT_MS", 0.0, minimum=0, maximum=10_000)

# Frames a video's worker commits together (detections, progress, the renewed lease).
VIDEO_BATCH_SIZE = env_int("VIDEO_BATCH_SIZE", DETECTOR_MAX_BATCH or 8, minimum=1,
                           maximum=256)
# A running video part's lease: its worker's heartbeat renews it while the task holding
# the part is alive; once it lapses, the worker is taken for dead and the part is sent again.
VIDEO_LEASE_SECONDS = env_float("VIDEO_LEASE_SECONDS", 30, minimum=2)
# A live task that commits no batch of its video part for this long is stalled: the part
# is taken from it and sent again (failed "stalled" after JOB_MAX_ATTEMPTS).
STALL_SECONDS = env_float("STALL_SECONDS", 600, minimum=1)
# A worker runs image requests before video frames; a video batch runs in slices of this
# many frames, so that an image waits for at most one slice (0: auto, 2 frames on a CPU,
# the whole batch on a GPU, where a batch takes milliseconds).
VIDEO_SLICE_FRAMES = env_int("VIDEO_SLICE_FRAMES", 0, minimum=0, maximum=256)
# ... but a running video is never starved: while video frames wait, at most this many
# image batches run in a row before one video slice (see engine/batching.py).
IMAGE_BATCHES_PER_VIDEO_SLICE = env_int("IMAGE_BATCHES_PER_VIDEO_SLICE", 3, minimum=1,
                                        maximum=1000)
# A request for an annotated video that produced nothing after this long may be repeated.
ANNOTATION_RETRY_SECONDS = env_float("ANNOTATION_RETRY_SECONDS", 600, minimum=1)
# Long videos are cut into up to VIDEO_MAX_PARTS parts of at least VIDEO_PART_MIN_FRAMES
# processed frames, which workers take in parallel.
VIDEO_MAX_PARTS = env_int("VIDEO_MAX_PARTS", 8, minimum=1, maximum=1000)
VIDEO_PART_MIN_FRAMES = env_int("VIDEO_PART_MIN_FRAMES", 1500, minimum=1)
# Tracking (videos; engine/tracking.py): a lost object's track waits TRACK_BUFFER_MS for it
# to come back (a job's track_buffer_ms); a box at least TRACK_ACTIVATION_THRESHOLD
# confident may start a track (a job's track_activation_threshold); boxes below
# TRACK_HIGH_THRESHOLD join tracks in ByteTrack's second round only; a track takes a box
# whose IoU with its predicted box is at least TRACK_MATCH_IOU; a box TRACK_NESTED_OVERLAP
# inside a larger one of its class is a duplicate, not an object; tracks shorter than
# TRACK_MIN_FRAMES processed frames are dropped.
TRACK_BUFFER_MS = env_int("TRACK_BUFFER_MS", 1000, minimum=0, maximum=60_000)
TRACK_ACTIVATION_THRESHOLD = env_float("TRACK_ACTIVATION_THRESHOLD", 0.5, minimum=0, maximum=1)
TRACK_HIGH_THRESHOLD = env_float("TRACK_HIGH_THRESHOLD", 0.5, minimum=0, maximum=1)
TRACK_MATCH_IOU = env_float("TRACK_MATCH_IOU", 0.2, minimum=0, maximum=1)
TRACK_NESTED_OVERLAP = env_float("TRACK_NESTED_OVERLAP", 0.85, minimum=0, maximum=1)
TRACK_MIN_FRAMES = env_int("TRACK_MIN_FRAMES", 3, minimum=1, maximum=1000)
# How often each worker looks for jobs whose worker died (and requeues them).
WATCHDOG_SECONDS = env_float("WATCHDOG_SECONDS", 5, minimum=0.5)
# A started image job's lease: its worker's heartbeat renews it; once it lapses, the worker
# is taken for dead and the job is sent again.
IMAGE_STALE_SECONDS = env_float("IMAGE_STALE_SECONDS", 60, minimum=1)
# A job (or video part) no worker started this long after it was queued is sent again
# (its message was lost with a worker that had taken it off the queue).
QUEUE_STALE_SECONDS = env_float("QUEUE_STALE_SECONDS", 600, minimum=1)

# Completion webhooks (video jobs with a callback_url).
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=0.1)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 6, minimum=1)
# Retries wait a random time up to this, doubled at each retry (Celery's full jitter).
WEBHOOK_BACKOFF_SECONDS = env_int("WEBHOOK_BACKOFF_SECONDS", 2, minimum=1)
WEBHOOK_MAX_SECONDS = env_float("WEBHOOK_MAX_SECONDS", 600, minimum=1)
WEBHOOK_SECRET = env_secret("WEBHOOK_SECRET") or ""
# callback_url may name a loopback, private or link-local address (refused by default:
# see core/outbound.py).
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)

# Retention (0: keep forever): uploaded media and outputs of jobs finished more than
# RETENTION_MEDIA_DAYS ago are deleted (the records stay); jobs finished more than
# RETENTION_JOBS_DAYS ago are deleted with their records and files. Celery beat runs it
# every RETENTION_INTERVAL_SECONDS.
RETENTION_MEDIA_DAYS = env_float("RETENTION_MEDIA_DAYS", 0, minimum=0)
RETENTION_JOBS_DAYS = env_float("RETENTION_JOBS_DAYS", 0, minimum=0)
RETENTION_INTERVAL_SECONDS = env_float("RETENTION_INTERVAL_SECONDS", 3600, minimum=1)

# A job whose worker died this many times (kill -9, out of memory) is failed, not retried.
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 3, minimum=1)

# Workers report every WORKER_HEARTBEAT_SECONDS; /readyz forgets them after STALE seconds.
WORKER_HEARTBEAT_SECONDS = env_float("WORKER_HEARTBEAT_SECONDS", 2.0, minimum=0.1)
WORKER_STALE_SECONDS = env_float("WORKER_STALE_SECONDS", 6.0, minimum=0.5)
for _lease in ("IMAGE_STALE_SECONDS", "VIDEO_LEASE_SECONDS"):
    if globals()[_lease] < 2 * WORKER_HEARTBEAT_SECONDS:
        raise ImproperlyConfigured(f"{_lease}={globals()[_lease]}: must be at least twice "
                                   "WORKER_HEARTBEAT_SECONDS (the heartbeat renews the lease)")

# How long POST /api/detect/image waits for the worker before answering 202.
DETECT_WAIT_SECONDS = env_float("DETECT_WAIT_SECONDS", 30.0, minimum=0, maximum=600)
ALLOW_ANONYMOUS = env_bool("ALLOW_ANONYMOUS", False)

# --- Celery ---------------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if not CELERY_BROKER_URL.startswith(("filesystem://", "redis://", "rediss://", "amqp://",
                                     "pyamqp://")):
    raise ImproperlyConfigured(f"CELERY_BROKER_URL={CELERY_BROKER_URL!r}: expected filesystem://, "
                               "redis://, rediss:// or amqp://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    BROKER_DIR.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT = "pmr.broker:FilesystemTransport"  # atomic message files
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "control_folder": str(BROKER_DIR / "control"),  # exchange tables, not in the cwd
        "store_processed": False,
        "polling_interval": 0.01,  # seconds: the broker adds at most this to a request
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        CELERY_BROKER_TRANSPORT = "pmr.broker:RedisTransport"  # survives a Redis restart
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Time limits of image tasks, set on that task: as Celery's global task_time_limit they
# would also cut short video parts and annotations, which take as long as the video does.
IMAGE_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300, minimum=1)
IMAGE_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 330, minimum=1)
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", 16, minimum=1)
# Video parts a worker process runs at once, the others waiting in the queue (0: auto,
# half its threads if it also takes image requests, which the other half is left to;
# all of them if it takes only videos).
VIDEO_PARTS_PER_WORKER = env_int("VIDEO_PARTS_PER_WORKER", 0, minimum=0)
CELERY_WORKER_POOL = "threads"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A prefix keeps several deployments (or test runs) apart on one broker.
QUEUE_PREFIX = env_str("PMR_QUEUE_PREFIX", "")
IMAGE_QUEUE = f"{QUEUE_PREFIX}images"
VIDEO_QUEUE = f"{QUEUE_PREFIX}videos"
CELERY_TASK_DEFAULT_QUEUE = IMAGE_QUEUE
# Scoring models on the reviewed data is long work, as videos are: their queue.
CELERY_TASK_ROUTES = {"detection.*": {"queue": IMAGE_QUEUE}, "videos.*": {"queue": VIDEO_QUEUE},
                      "review.*": {"queue": VIDEO_QUEUE}}
# Imported by a worker at start (with the apps' tasks): its start-up and shutdown.
CELERY_IMPORTS = ("pmr.worker",)
CELERY_BEAT_SCHEDULE = {
    "retention": {"task": "detection.apply_retention", "schedule": RETENTION_INTERVAL_SECONDS},
}
# Where a waiting request hears that its job finished (Redis pub/sub); empty: poll the row.
NOTIFY_REDIS_URL = env_str("NOTIFY_REDIS_URL", CELERY_BROKER_URL
                           if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "")

# --- Quotas ---------------------------------------------------------------------------------------
# Request rates per user ("N/second|minute|hour|day"); uploads ("detect") count separately.
THROTTLE_USER_RATE = env_str("THROTTLE_USER_RATE", "1200/minute")
THROTTLE_ANON_RATE = env_str("THROTTLE_ANON_RATE", "60/minute")
THROTTLE_DETECT_RATE = env_str("THROTTLE_DETECT_RATE", "600/minute")
for _name in ("THROTTLE_USER_RATE", "THROTTLE_ANON_RATE", "THROTTLE_DETECT_RATE"):
    _count, _, _period = globals()[_name].partition("/")
    if not _count.isdigit() or _period[:1] not in ("s", "m", "h", "d"):
        raise ImproperlyConfigured(f"{_name}={globals()[_name]!r}: expected e.g. 600/minute")
# Queued or running video jobs one user may have at once (0: no limit).
MAX_ACTIVE_VIDEO_JOBS_PER_USER = env_int("MAX_ACTIVE_VIDEO_JOBS_PER_USER", 4, minimum=0)

# The cache holds the rate counters: Redis when there is one, else files shared by the
# processes of one host.
CACHE_URL = env_str("CACHE_URL", CELERY_BROKER_URL
                    if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "")
if CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": CACHE_URL, "KEY_PREFIX": f"pmr{QUEUE_PREFIX}",
                          "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                          "LOCATION": str(VAR_DIR / "cache")}}

# --- Compatibility layers ------------------------------------------------------------------------
# The Rekognition-compatible endpoint's path ("" is "/", as AWS's) and, without an S3
# store, a folder whose subfolders stand in for buckets (Video.S3Object / Image.S3Object).
REKOGNITION_PATH = env_str("REKOGNITION_PATH", "").strip("/")  # served with and without "/"
REKOGNITION_BUCKETS_DIR = env_str("REKOGNITION_BUCKETS_DIR", str(VAR_DIR / "buckets"))

# --- API ----------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.AllowAny" if ALLOW_ANONYMOUS
        else "rest_framework.permissions.IsAuthenticated",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.JSONParser",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["core.throttling.UserThrottle", "core.throttling.AnonThrottle",
                                 "core.throttling.ScopedThrottle"],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.PagePagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "SWAGGER_UI_DIST": "SIDECAR",  # served locally: the docs work offline
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "TITLE": "PMR API",
    "DESCRIPTION": "Object detection on images and videos with YOLOv3.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "core.schema.forbid_unknown_request_fields"],
}

# --- Localisation -------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging and metrics -------------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOG_FORMAT = env_choice("LOG_FORMAT", "plain", ("plain", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "pythonjsonlogger.json.JsonFormatter",
                 "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d %(threadName)s",
                 "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
# GET /metrics (Prometheus). With a token set, scrapers send "Authorization: Bearer <token>".
METRICS_TOKEN = env_secret("METRICS_TOKEN") or ""

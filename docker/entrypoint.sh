#!/bin/sh
# Container entrypoint: web | worker | flower | migrate | any command.
set -e
case "$1" in
  migrate)
    python manage.py ensure_storage
    exec python manage.py migrate --noinput ;;
  web)
    python manage.py fetch_weights --quiet  # the class names validate API parameters
    exec gunicorn pmr.wsgi:application --config pmr/gunicorn.conf.py ;;
  worker)
    python manage.py fetch_weights --quiet
    exec celery --app pmr worker --loglevel "${LOG_LEVEL:-INFO}" \
      --queues "${WORKER_QUEUES:-images,videos}" \
      --concurrency "${CELERY_WORKER_CONCURRENCY:-16}" --hostname "worker@%h" ;;
  beat)
    exec celery --app pmr beat --loglevel "${LOG_LEVEL:-INFO}" \
      --schedule /app/var/celerybeat-schedule ;;
  flower)
    exec celery --app pmr flower --port=5555 ;;
  *)
    exec "$@" ;;
esac

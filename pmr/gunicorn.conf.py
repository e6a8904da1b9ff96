"""gunicorn settings for `make run` and the web container (environment-driven)."""

import os

_var = os.environ.get("PMR_VAR_DIR", os.path.join(os.getcwd(), "var"))

_port = os.environ.get("PORT", "8000")
# Loopback unless BIND says otherwise (the container sets BIND=0.0.0.0).
bind = f"{os.environ.get('BIND', '127.0.0.1')}:{_port}"
# The control socket is this server's own, under its instance's var/ and named by its
# port: two instances on one host (or two servers of one instance) never share one.
control_socket = os.path.join(_var, f"gunicorn-{_port}.ctl")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# A detect request waits for its worker: threads let a web process hold many of them.
threads = int(os.environ.get("WEB_THREADS", "16"))
timeout = int(float(os.environ.get("DETECT_WAIT_SECONDS", "30"))) + 30
graceful_timeout = 30
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None  # empty: no access log
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


# Prometheus multiprocess mode: each web process writes its samples here; /metrics sums them.
# Named by the port like the control socket: a second server under the same var/ clears
# its own samples at start-up, never those of a server still running.
_metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR",
                                     os.path.join(_var, f"prometheus-{_port}"))
os.makedirs(_var, exist_ok=True)


def on_starting(server):
    import shutil

    shutil.rmtree(_metrics_dir, ignore_errors=True)  # samples of an earlier run
    os.makedirs(_metrics_dir, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)

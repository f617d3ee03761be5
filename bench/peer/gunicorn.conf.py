# gunicorn settings for the bench's Python peers (score.py, score_ort.py). The OpenCV DNN peer runs
# two sync workers, as the AVA HTTP extension samples run their Flask apps under gunicorn's default
# worker class; the onnxruntime peer runs 2 workers x 2 threads (gthread, PEER_THREADS=2).
import os

bind = os.environ.get('PEER_BIND', '127.0.0.1:8090')
workers = int(os.environ.get('PEER_WORKERS', '2'))
threads = int(os.environ.get('PEER_THREADS', '1'))
# gunicorn's default is sync; more than one thread per worker means gthread (which keeps
# connections alive, unlike sync workers).
worker_class = 'gthread' if threads > 1 else 'sync'
# Each worker imports the app (and so loads the model) after the fork.
preload_app = False
# Errors to stderr, no access log (gunicorn's defaults; the samples log no line per request).
errorlog = '-'
accesslog = None
loglevel = os.environ.get('PEER_LOG_LEVEL', 'info')
# Short enough that `stop()` in bench/peer.ts rarely needs its SIGKILL.
graceful_timeout = 5


def post_worker_init(worker):
    # bench/peer.ts waits for one such line per worker before it calls the peer ready.
    worker.log.info('edge-scorer-peer: worker ready pid=%d workers=%d', worker.pid, workers)

# gunicorn settings for the bench's Python peer (see score.py): two sync workers, as the AVA HTTP
# extension samples run their Flask apps under gunicorn's default worker class.
import os

bind = os.environ.get('PEER_BIND', '127.0.0.1:8090')
workers = 2
worker_class = 'sync'
# Each worker imports score.py (and so loads the net) after the fork.
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

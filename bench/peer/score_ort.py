# The second Python peer for `npm run bench`: the Azure Video Analyzer ONNX sample's architecture
# (utilities/video-analysis/yolov3-onnx, resnet-onnx: Flask behind gunicorn, `POST /score` with the
# encoded frame as the body, OpenCV decode and resize, NumPy preprocessing, onnxruntime's Python
# API, the AVA inference JSON back), run under gunicorn with 2 workers x 2 threads (gthread).
# Pre- and post-processing are score.py's (OpenCV DNN peer), so both peers and edge-scorer feed the
# network the same tensor; only the engine differs.
#
# Environment:
#   PEER_MODEL_PATH  the ONNX model; model.json beside it gives the pre- and post-processing.
#   PEER_ORT_THREADS optional; onnxruntime's intra-op threads (default: onnxruntime's own choice,
#                    as in the samples).

import json
import os
import threading

import cv2
import numpy as np
import onnxruntime
from flask import Flask, Response, request

from score import ClassifierModel, logger


class OrtClassifierModel(ClassifierModel):
    """score.py's model with onnxruntime in place of OpenCV's DNN module."""

    def __init__(self, model_path):
        options = onnxruntime.SessionOptions()
        if os.environ.get('PEER_ORT_THREADS'):
            options.intra_op_num_threads = int(os.environ['PEER_ORT_THREADS'])
        self._session = onnxruntime.InferenceSession(
            model_path, sess_options=options, providers=['CPUExecutionProvider']
        )
        self._input = self._session.get_inputs()[0].name
        super().__init__(model_path, load_net=False)
        # onnxruntime's run() is thread-safe: the threads of a worker share the session.
        self._lock = threading.Lock()

    def score(self, cv_image):
        blob = self.preprocess(cv_image)
        output = self._session.run(None, {self._input: blob})[0]
        return self.postprocess(output)


model = OrtClassifierModel(os.environ['PEER_MODEL_PATH'])

app = Flask(__name__)


@app.route('/', methods=['GET'])
def default_page():
    return Response(response='Hello from the edge-scorer bench peer (onnxruntime)', status=200)


@app.route('/health', methods=['GET'])
def health():
    body = {
        'status': 'ok',
        'pid': os.getpid(),
        'engine': 'onnxruntime %s' % onnxruntime.__version__,
        'opencv': cv2.__version__,
    }
    return Response(json.dumps(body), status=200, mimetype='application/json')


@app.route('/score', methods=['POST'])
def score():
    body = request.get_data(cache=False)
    cv_image = cv2.imdecode(np.frombuffer(body, dtype=np.uint8), cv2.IMREAD_COLOR)
    if cv_image is None:
        return Response(response='Could not decode image', status=400)
    try:
        inferences = model.score(cv_image)
    except Exception:
        logger.exception('scoring failed')
        return Response(response='Error processing image', status=500)
    if len(inferences) == 0:
        return Response(status=204)
    return Response(json.dumps({'inferences': inferences}), status=200, mimetype='application/json')

# The Python peer for `npm run bench`: an HTTP inference extension built the way the Azure Video
# Analyzer / Live Video Analytics samples build theirs (utilities/video-analysis/resnet-onnx,
# edge-modules/extensions/yolo/tinyyolov3/http-cpu, customvision/avaextension): Flask behind
# gunicorn sync workers, `POST /score` with the encoded frame as the body, `cv2.imdecode`, NumPy
# preprocessing, one model object per worker guarded by a lock, and the AVA inference JSON back.
# The engine is OpenCV's DNN module (Debian's python3-opencv) instead of onnxruntime.
#
# Environment:
#   PEER_MODEL_PATH  the ONNX model (static input shape); model.json beside it gives the pre- and
#                    post-processing, as it does for edge-scorer.
#   PEER_CV_THREADS  optional; cv2.setNumThreads(n) when set. Unset (the default, and what the
#                    samples do) leaves OpenCV's own choice.

import json
import logging
import os
import threading

import cv2
import numpy as np
from flask import Flask, Response, request

logger = logging.getLogger('gunicorn.error')


class PeerError(Exception):
    pass


class ClassifierModel:
    def __init__(self, model_path, load_net=True):
        self._lock = threading.Lock()

        manifest_path = os.path.join(os.path.dirname(os.path.abspath(model_path)), 'model.json')
        with open(manifest_path, 'r', encoding='utf-8') as f:
            manifest = json.load(f)

        task = manifest.get('task', 'classification')
        if task != 'classification':
            raise PeerError('the peer serves classification models only, model.json says %r' % task)

        spec = manifest.get('input', {})
        self.width = int(spec['width'])
        self.height = int(spec['height'])
        self.resize = spec.get('resize', 'stretch')
        self.color = spec.get('color', 'rgb')
        self.layout = spec.get('layout', 'nchw')
        self.pad_value = int(spec.get('padValue', 114))
        if spec.get('dtype', 'float32') != 'float32':
            raise PeerError('the peer feeds float32 inputs only')
        if self.resize not in ('stretch', 'letterbox', 'center-crop'):
            raise PeerError('unknown input.resize %r' % self.resize)
        if self.color not in ('rgb', 'bgr', 'gray'):
            raise PeerError('unknown input.color %r' % self.color)
        if self.layout not in ('nchw', 'nhwc'):
            raise PeerError('unknown input.layout %r' % self.layout)
        # Pixel p (0..255) becomes (p * scale - mean[c]) / std[c], as edge-scorer's manifest says.
        self.scale = np.float32(spec.get('scale', 1.0 / 255.0))
        self.mean = np.array(spec.get('mean', [0.0]), dtype=np.float32)
        self.std = np.array(spec.get('std', [1.0]), dtype=np.float32)

        out = manifest.get('output', {})
        self.output_format = out.get('format', 'probabilities')
        if self.output_format not in ('probabilities', 'logits'):
            raise PeerError('unknown output.format %r for classification' % self.output_format)
        self.top_k = int(out.get('topK', 5))
        self.labels = list(manifest.get('labels', []))

        if load_net:
            self._net = cv2.dnn.readNetFromONNX(model_path)

    def preprocess(self, cv_image):
        src_h, src_w = cv_image.shape[:2]
        if self.resize == 'stretch':
            image = cv2.resize(cv_image, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        elif self.resize == 'letterbox':
            ratio = min(self.width / src_w, self.height / src_h)
            new_w = max(1, round(src_w * ratio))
            new_h = max(1, round(src_h * ratio))
            resized = cv2.resize(cv_image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            left = (self.width - new_w) // 2
            top = (self.height - new_h) // 2
            image = cv2.copyMakeBorder(
                resized,
                top,
                self.height - new_h - top,
                left,
                self.width - new_w - left,
                cv2.BORDER_CONSTANT,
                value=(self.pad_value,) * 3,
            )
        else:  # center-crop: cover the input, then cut the middle out
            ratio = max(self.width / src_w, self.height / src_h)
            new_w = max(self.width, round(src_w * ratio))
            new_h = max(self.height, round(src_h * ratio))
            resized = cv2.resize(cv_image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            left = (new_w - self.width) // 2
            top = (new_h - self.height) // 2
            image = resized[top : top + self.height, left : left + self.width]

        if self.color == 'rgb':
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif self.color == 'gray':
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, np.newaxis]

        blob = image.astype(np.float32)
        blob *= self.scale
        blob -= self.mean
        blob /= self.std
        if self.layout == 'nchw':
            blob = np.transpose(blob, [2, 0, 1])
        return np.ascontiguousarray(np.expand_dims(blob, 0))

    def postprocess(self, output):
        scores = np.asarray(output, dtype=np.float32).reshape(-1)
        if self.output_format == 'logits':
            exp = np.exp(scores - np.max(scores))
            scores = exp / np.sum(exp)
        order = np.argsort(-scores, kind='stable')[: self.top_k]
        inferences = []
        for index in order.tolist():
            label = self.labels[index] if index < len(self.labels) else str(index)
            inferences.append(
                {
                    'type': 'classification',
                    'classification': {'tag': {'value': label, 'confidence': float(scores[index])}},
                }
            )
        return inferences

    def score(self, cv_image):
        with self._lock:
            blob = self.preprocess(cv_image)
            self._net.setInput(blob)
            output = self._net.forward()
        return self.postprocess(output)


if os.environ.get('PEER_CV_THREADS'):
    cv2.setNumThreads(int(os.environ['PEER_CV_THREADS']))

# Loaded when the module is imported: gunicorn (without preload_app) imports it in each worker
# after the fork, so every worker holds its own net, as in the samples.
# score_ort.py imports this module for ClassifierModel only (PEER_ENGINE=onnxruntime).
if os.environ.get('PEER_ENGINE', 'opencv') == 'opencv':
    model = ClassifierModel(os.environ['PEER_MODEL_PATH'])

app = Flask(__name__)


@app.route('/', methods=['GET'])
def default_page():
    return Response(response='Hello from the edge-scorer bench peer (OpenCV DNN)', status=200)


@app.route('/health', methods=['GET'])
def health():
    body = {'status': 'ok', 'pid': os.getpid(), 'opencv': cv2.__version__, 'threads': cv2.getNumThreads()}
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

#!/usr/bin/env bash
# Installs what the Python peer needs, from Debian's archive only (no PyPI): OpenCV (with its DNN
# module), Flask, gunicorn and NumPy for the system python3. Idempotent: does nothing when they are
# already installed, runs `apt-get update` at most once otherwise.
set -euo pipefail

PACKAGES=(python3-opencv python3-flask gunicorn python3-numpy)
PYTHON=/usr/bin/python3

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} > 0)); then
  echo "peer setup: installing ${missing[*]}" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "peer setup: apt-get not found; install ${missing[*]} (Debian/Ubuntu packages) by hand" >&2
    exit 1
  fi
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=(sudo)
    else
      echo "peer setup: not root and no sudo; install ${missing[*]} by hand" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! "${SUDO[@]}" apt-get update; then
    echo "peer setup: apt-get update failed" >&2
    exit 1
  fi
  if ! "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; then
    echo "peer setup: apt-get install ${missing[*]} failed" >&2
    exit 1
  fi
fi

# The packages being installed is not enough if something shadows them; check the imports the
# peer needs with the interpreter it runs under.
if ! "$PYTHON" -c 'import cv2, flask, gunicorn, numpy; cv2.dnn.readNetFromONNX' >/dev/null 2>&1; then
  echo "peer setup: $PYTHON cannot import cv2 (with dnn), flask, gunicorn and numpy" >&2
  "$PYTHON" -c 'import cv2, flask, gunicorn, numpy' >&2 || true
  exit 1
fi
"$PYTHON" -c 'import cv2, importlib.metadata as m; print("peer setup: ok (opencv %s, flask %s, gunicorn %s, numpy %s)" % (cv2.__version__, m.version("flask"), m.version("gunicorn"), m.version("numpy")))'

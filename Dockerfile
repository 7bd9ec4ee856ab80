# clip-gaze: the API and the indexer share this image (see docker-compose.yml).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    CLIP_GAZE_HOME=/data \
    HF_HOME=/models

WORKDIR /src
COPY pyproject.toml README.md ./
COPY clip_gaze ./clip_gaze
COPY service ./service
COPY indexer ./indexer
COPY lists ./lists
RUN pip install . && rm -rf /src

WORKDIR /data
VOLUME ["/data", "/models"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request,json,sys; sys.exit(json.load(urllib.request.urlopen('http://127.0.0.1:8000/v1/health'))['status'] != 'ready')"
CMD ["clip-gaze", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--no-index"]

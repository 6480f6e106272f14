# loops-bridge: `docker build -t loops-bridge . && docker run -p 8000:8000 -v loops-bridge-data:/data loops-bridge`
#
# Stage 1 builds the wheel from the checkout; stage 2 installs that wheel, as any user's
# `pip install` would, into a slim image that holds no source tree and runs as non-root.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY bridge ./bridge
COPY providers ./providers
COPY templates ./templates
RUN pip wheel --no-deps --wheel-dir /wheels .


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    BRIDGE_DATABASE_URL=sqlite:////data/bridge.db \
    BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8000

COPY --from=build /wheels /wheels
RUN pip install "$(echo /wheels/loops_bridge-*.whl)[postgres]" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin bridge \
    && mkdir -p -m 700 /data && chown bridge:bridge /data

USER bridge
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# With BRIDGE_ADMIN=8001 the admin and /metrics move to port 8001; publish it on the
# host's loopback only: -p 127.0.0.1:8001:8001 (README: Exposing only the webhooks).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('BRIDGE_PORT', '8000')}/healthz\", timeout=4)"]
CMD ["loops-bridge", "serve"]

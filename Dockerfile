# One image for the operator (`mockfleet operator`) and the towers (`mockfleet tower`).
# CPython 3.12, not 3.11: its zygote makes the preloaded objects immortal, and
# each mock then takes about half the memory (docs/performance.md).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY mock ./mock
COPY tower ./tower
COPY operator ./operator
RUN pip install . && rm -rf /src

# Fixed non-root uid/gid: the manifests set runAsUser/fsGroup 10001.
RUN groupadd --system --gid 10001 mockfleet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mockfleet --no-create-home mockfleet \
    && mkdir -p /var/lib/mockfleet /etc/mockfleet \
    && chown 10001:10001 /var/lib/mockfleet
USER 10001:10001
WORKDIR /var/lib/mockfleet

ENTRYPOINT ["mockfleet"]
CMD ["--help"]

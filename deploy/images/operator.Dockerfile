# The Wukong operator. Build from the repository root:
#   docker build -f deploy/images/operator.Dockerfile -t wukong-operator .
#
# It runs on Debian's python3, which is built with USDT probes (python:audit):
# the node agent reads the operator's cancellations through them. The official
# python images have no probes, so the agent could not see this operator.
FROM debian:bookworm-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 python3-venv=3.11.2-1+b1 \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY wukong /src/wukong
# The package without extras: what `wukong run` needs and nothing of the
# development tools (no Grafana SDK).
RUN python3 -m venv /opt/wukong \
    && /opt/wukong/bin/pip install --no-cache-dir /src

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 \
       ca-certificates=20230311+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/wukong /opt/wukong
# The chart runs it as this user with a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["/opt/wukong/bin/wukong"]
CMD ["run"]

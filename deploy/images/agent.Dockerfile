# The Wukong node agent (eBPF). Build from the repository root:
#   docker build -f deploy/images/agent.Dockerfile -t wukong-agent .
#
# BCC's Python bindings come from Debian's python3-bpfcc and import only in
# Debian's python3, so the virtualenv sees the system site-packages. Kernel
# headers are not in the image: the DaemonSet mounts the node's /lib/modules
# and /usr/src.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 \
       python3-venv=3.11.2-1+b1 python3-bpfcc=0.26.0+ds-1 ca-certificates=20230311+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY wukong /src/wukong
# The package without extras: what `wukong agent` needs (no development tools).
RUN python3 -m venv --system-site-packages /opt/wukong \
    && /opt/wukong/bin/pip install --no-cache-dir /src
# Root with a few capabilities, not privileged: see the chart's DaemonSet for why.
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["/opt/wukong/bin/wukong"]
CMD ["agent"]

# syntax=docker/dockerfile:1@sha256:ecfaec9ed6d810b56388c508f4121597bfbba70d41a6dfeee4d8cad5f295fc32
# Multi-stage build of both binaries; pick one with --target:
#   docker build --target proxy  -t hotplex-proxy:0.1.0 .
#   docker build --target worker -t hotplex-worker:0.1.0 .
# Runtime images are Debian slim (the proxy links the system OpenSSL), run as a
# non-root user (uid 10001), and hold nothing but the binary and CA certificates (and, in
# the worker, tini as PID 1).
#
# Every base image is pinned by digest (the tag says which version it was; the digest is
# what is pulled): a moved tag cannot change what is built. `make k8s-check` fails on an
# unpinned FROM (scripts/check-k8s-security.py). To update: `docker buildx imagetools
# inspect rust:1.95-bookworm` (and debian:bookworm-slim), take the top-level (index) digest.

FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p hotplex-proxy -p hotplex-worker \
    && install -D target/release/hotplex-proxy /out/hotplex-proxy \
    && install -D target/release/hotplex-worker /out/hotplex-worker

FROM debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251 AS runtime-base
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin hotplex
USER 10001:10001

FROM runtime-base AS proxy
COPY --from=build /out/hotplex-proxy /usr/local/bin/hotplex-proxy
EXPOSE 8000 8443 9900
ENTRYPOINT ["/usr/local/bin/hotplex-proxy"]
CMD ["--config", "/etc/hotplex/hotplex.yaml"]

FROM runtime-base AS worker
# tini as PID 1: the worker spawns agents (and they spawn tools); an agent process whose
# parent died is re-parented to PID 1, which must reap it or it stays a zombie. tini reaps
# every orphan and forwards SIGTERM/SIGINT to the worker (its drain). Debian's package
# (bookworm: 0.19), from the same pinned base.
USER root
RUN apt-get update && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
COPY --from=build /out/hotplex-worker /usr/local/bin/hotplex-worker
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/hotplex-worker"]
CMD ["--listen", "0.0.0.0:8080"]

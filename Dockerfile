# syntax=docker/dockerfile:1
# Multi-stage build of both binaries; pick one with --target:
#   docker build --target proxy  -t hotplex-proxy:0.1.0 .
#   docker build --target worker -t hotplex-worker:0.1.0 .
# Runtime images are Debian slim (the proxy links the system OpenSSL), run as a
# non-root user (uid 10001), and hold nothing but the binary and CA certificates.

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p hotplex-proxy -p hotplex-worker \
    && install -D target/release/hotplex-proxy /out/hotplex-proxy \
    && install -D target/release/hotplex-worker /out/hotplex-worker

FROM debian:bookworm-slim AS runtime-base
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
COPY --from=build /out/hotplex-worker /usr/local/bin/hotplex-worker
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/hotplex-worker"]
CMD ["--listen", "0.0.0.0:8080"]

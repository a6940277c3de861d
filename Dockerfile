# Image for every Pickple process (processors, gateway, topics tool, pickple-grow): one image keeps the
# binaries of a deployment in lockstep, so a processor never runs against a newer topic catalogue.
#
# Plain `docker build` semantics on purpose (no BuildKit cache mounts): docker-compose 1.29 builds
# with the legacy builder, and the stack must build the same way everywhere.

FROM rust:1-bookworm AS builder
# librdkafka is compiled from source by rdkafka-sys: cmake and a C/C++ toolchain are required,
# zlib/openssl headers cover its compression and (optional) TLS features.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake build-essential pkg-config zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# --locked: the image must build exactly what CI tested (Cargo.lock), never a fresh resolution.
RUN cargo build --release --locked --bin pickple-processor --bin pickple-gateway --bin topics --bin pickple-grow

FROM debian:bookworm-slim
# ca-certificates/libssl3: TLS to a real SMTP server or payment provider; curl: healthchecks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/pickple pickple \
 && mkdir -p /var/lib/pickple/state \
 && chown -R pickple:pickple /var/lib/pickple
COPY --from=builder /src/target/release/pickple-processor /src/target/release/pickple-gateway /src/target/release/topics /src/target/release/pickple-grow /usr/local/bin/
# The state dir exists and is owned by the app user in the image, so a fresh named volume mounted
# there inherits that ownership (sled must be able to write it without running as root).
USER pickple
WORKDIR /var/lib/pickple
ENV PICKPLE_STATE_DIR=/var/lib/pickple/state \
    PICKPLE_METRICS_ADDR=0.0.0.0:9100 \
    PICKPLE_GATEWAY_ADDR=0.0.0.0:8080 \
    RUST_LOG=info
EXPOSE 8080 9100
CMD ["pickple-gateway"]

# syntax=docker/dockerfile:1
# The project's images, one target per service, all from one builder stage:
#   docker build --target host          -t votes-host .            (votes-host, votectl, the components)
#   docker build --target grpc-producer -t votes-grpc-producer .
#   docker build --target consumer      -t votes-consumer .
#   docker build --target results       -t votes-results .
# Runtime images are debian:bookworm-slim with the one shared library beyond libc that the
# binaries link (zlib, for librdkafka) and curl for health checks, running as the non-root user
# 10001. Each image has an ENTRYPOINT and no CMD: flags and VOTES_* variables come from
# compose.yaml or the k8s manifests, and `--check-config` prints what a container would run with.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake protobuf-compiler libcurl4-openssl-dev \
      libsasl2-dev libssl-dev zlib1g-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add wasm32-wasip2
WORKDIR /src
ENV CARGO_TARGET_DIR=/src/target
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target wasm32-wasip2 --manifest-path components/Cargo.toml \
 && cargo build --release --locked --workspace --bins \
 && mkdir -p /out/bin /out/components \
 && cp target/release/votes-host target/release/votectl target/release/grpc-producer \
       target/release/consumer target/release/results /out/bin/ \
 && cp target/wasm32-wasip2/release/vote_rest.wasm target/wasm32-wasip2/release/vote_rest_contest.wasm \
       target/wasm32-wasip2/release/weather_rest.wasm target/wasm32-wasip2/release/ballot_rest.wasm \
       /out/components/ \
 && cp spin.toml /out/spin.toml

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin votes
ENV RUST_LOG=info
USER 10001:10001

# The wasm host with the application manifest (/opt/votes/spin.toml) and the components it
# serves (vote, weather and ballot producers), and vote_rest_contest.wasm to deploy with
# `votectl component deploy` (votectl is in the image for `docker compose exec`).
FROM runtime AS host
COPY --from=builder /out/bin/votes-host /out/bin/votectl /usr/local/bin/
COPY --from=builder /out/components/ /opt/votes/components/
COPY --from=builder /out/spin.toml /opt/votes/spin.toml
EXPOSE 8080
ENTRYPOINT ["votes-host"]

FROM runtime AS grpc-producer
COPY --from=builder /out/bin/grpc-producer /usr/local/bin/
EXPOSE 50051 9102
ENTRYPOINT ["grpc-producer"]

FROM runtime AS consumer
COPY --from=builder /out/bin/consumer /usr/local/bin/
COPY --from=builder /out/spin.toml /opt/votes/spin.toml
EXPOSE 9101
ENTRYPOINT ["consumer"]

FROM runtime AS results
COPY --from=builder /out/bin/results /usr/local/bin/
COPY --from=builder /out/spin.toml /opt/votes/spin.toml
EXPOSE 8088
ENTRYPOINT ["results"]

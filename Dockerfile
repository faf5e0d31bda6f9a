# weir: a Layer-7 load-balancing reverse proxy.
#
# Multi-stage build: compile a release binary with the locked dependency set,
# then copy it into a slim Debian runtime that has CA certificates (for
# upstream TLS with system-independent roots, and for users who mount their
# own), runs as an unprivileged user, and ships the documented example
# config as the default.
#
#   docker build -t weir .
#   docker run -p 8080:8080 -v $PWD/config.yaml:/etc/weir/config.yaml weir
#
# Ports: 8080 traffic (as configured), 9901 admin (metrics, health, reload).
# The example config binds the admin listener to 127.0.0.1; in a container,
# set `admin.bind: "0.0.0.0:9901"` so probes and scrapers can reach it.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin weir \
    && cp target/release/weir /usr/local/bin/weir

FROM debian:bookworm-slim
# Unpinned on purpose: bookworm's point releases only carry security fixes,
# and a rebuild should pick them up.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin weir \
    && mkdir -p /etc/weir
COPY --from=build /usr/local/bin/weir /usr/local/bin/weir
COPY config.example.yaml /etc/weir/config.yaml
USER 10001
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["run", "--config", "/etc/weir/config.yaml", "--log-format", "json"]

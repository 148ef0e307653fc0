# syntax=docker/dockerfile:1
# segmentd: a release build in one stage, a slim Debian runtime as uid 10001 in
# the other, with its data in the /var/lib/segmentd volume.
#
# Build: docker build -t segmentd .
# Run:   export SEGMENTD_ADMIN_KEY="$(openssl rand -hex 32)"   # or your stored key
#        docker run -d --name segmentd --stop-timeout 60 \
#          -p 127.0.0.1:50051:50051 -p 127.0.0.1:9464:9464 \
#          -v segmentd-data:/var/lib/segmentd -e SEGMENTD_ADMIN_KEY segmentd
# Check: docker inspect --format '{{.State.Health.Status}}' segmentd
#
# The server listens on 0.0.0.0 here, so it refuses to start without an admin
# key; `-e SEGMENTD_ADMIN_KEY` passes the caller's value through, and the image
# holds none. A stop folds every tenant's delta log (about 10 s at ten million
# customers), longer than docker's default 10 s before SIGKILL: hence
# --stop-timeout.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependencies first, against stub sources, so that a source change does not
# rebuild them. build.rs compiles proto/ with protox: no protoc is needed.
# Cargo.toml names the benches, so cargo wants their files to exist.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/count_rules.rs \
    && echo 'fn main() {}' > benches/restart.rs \
    && cargo build --release --locked \
    && rm -rf src benches

COPY src ./src
COPY benches ./benches
# The editor page's files are compiled into the binary (src/web.rs).
COPY web ./web
# COPY keeps the files' own times, older than the stub build: touch them so
# cargo rebuilds the crate.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin segmentd

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 segmentd \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/segmentd --shell /usr/sbin/nologin segmentd \
    && mkdir -p /var/lib/segmentd \
    && chown 10001:10001 /var/lib/segmentd \
    && chmod 0750 /var/lib/segmentd
COPY --from=build /src/target/release/segmentd /usr/local/bin/segmentd

# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
VOLUME /var/lib/segmentd

# No SEGMENTD_ADMIN_KEY here: it comes from `docker run -e` or a Secret.
ENV SEGMENTD_LISTEN=0.0.0.0:50051 \
    SEGMENTD_DATA=/var/lib/segmentd \
    SEGMENTD_METRICS_LISTEN=0.0.0.0:9464 \
    SEGMENTD_LOG_FORMAT=json \
    RUST_LOG=info
# gRPC, then Prometheus text at /metrics.
EXPOSE 50051 9464

# A cold start of a ten-million-customer tenant takes about 19 s to SERVING.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["segmentd", "health", "--server", "127.0.0.1:50051"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["segmentd"]
CMD ["serve"]

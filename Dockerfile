# syntax=docker/dockerfile:1
# Build: docker build -t segmentd .
# Run:   docker run --network host -v segmentd-data:/var/lib/segmentd segmentd

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
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
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin segmentd

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/segmentd segmentd \
    && mkdir -p /var/lib/segmentd && chown segmentd /var/lib/segmentd
COPY --from=build /src/target/release/segmentd /usr/local/bin/segmentd
USER segmentd
VOLUME /var/lib/segmentd
ENV SEGMENTD_DATA=/var/lib/segmentd \
    SEGMENTD_LISTEN=127.0.0.1:50051 \
    RUST_LOG=info
EXPOSE 50051
STOPSIGNAL SIGTERM
ENTRYPOINT ["segmentd"]
CMD ["serve"]

# Multi-stage build: compile with the Rust toolchain (cmake for pingora's zlib-ng),
# run on a slim Debian as a non-root user.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY conf ./conf
COPY benches ./benches
RUN cargo build --release --locked --bin hookgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home hookgate
COPY --from=build /src/target/release/hookgate /usr/local/bin/hookgate
COPY conf /etc/hookgate
USER hookgate
EXPOSE 8080 9090
ENTRYPOINT ["hookgate"]
CMD ["serve", "-c", "/etc/hookgate/hookgate.toml"]

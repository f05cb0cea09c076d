# Multi-stage build: compile with the Rust image, run on a small Debian base
# as a non-root user. Config is the built-in defaults plus an optional file
# mounted at /etc/otpgate/otpgate.toml and OTPGATE__SECTION__KEY variables.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
COPY config ./config
COPY benches ./benches
RUN cargo build --release --locked --bin otpgate

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home otpgate \
    && mkdir -p /etc/otpgate
COPY --from=build /src/target/release/otpgate /usr/local/bin/otpgate
COPY config/default.toml /etc/otpgate/default.toml
USER otpgate
ENV OTPGATE__SERVER__LISTEN=0.0.0.0:8080 \
    OTPGATE__SERVER__ADMIN_LISTEN=0.0.0.0:9090 \
    OTPGATE__LOG__FORMAT=json
EXPOSE 8080 9090
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s \
    CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
ENTRYPOINT ["otpgate"]
CMD ["serve"]

# Sluice's container image: built in rust:1-bookworm, run from debian:bookworm-slim
# as the non-root user `sluice` (uid/gid 10033). The config is mounted at
# /etc/sluice/sluice.toml (the image carries examples/sluice.toml there).
#
#   docker build -t sluice .
#   docker run --rm -v "$PWD/sluice.toml:/etc/sluice/sluice.toml:ro" sluice check-config /etc/sluice/sluice.toml
#   docker run -d --name sluice -p 6033:6033 --stop-timeout 45 \
#     -v "$PWD/sluice.toml:/etc/sluice/sluice.toml:ro" sluice
#
# In the mounted config, server.listen must be 0.0.0.0:6033 (not loopback) to be
# reachable through the published port; the file must be readable by uid 10033.

FROM rust:1-bookworm AS builder
WORKDIR /src

# Dependencies first, built from the manifests and empty sources: this layer is
# reused until Cargo.toml or Cargo.lock change, so a code change rebuilds Sluice only.
COPY Cargo.toml Cargo.lock ./
COPY config/Cargo.toml config/
COPY protocol/Cargo.toml protocol/
COPY router/Cargo.toml router/
COPY pool/Cargo.toml pool/
COPY guard/Cargo.toml guard/
COPY proxy/Cargo.toml proxy/
COPY tests/Cargo.toml tests/
RUN for crate in config protocol router pool guard proxy tests; do \
      mkdir -p "$crate/src" && touch "$crate/src/lib.rs"; \
    done \
 && echo 'fn main() {}' > proxy/src/main.rs \
 && mkdir -p router/benches && echo 'fn main() {}' > router/benches/classify.rs \
 && cargo build --profile dist --locked -p sluice-proxy --bin sluice \
 && rm -rf config/src protocol/src router/src router/benches pool/src guard/src proxy/src tests/src

# Then Sluice itself. The sources are touched so that they are newer than the
# empty stand-ins' build, whatever times COPY gave them.
COPY . .
RUN find config protocol router pool guard proxy tests -name '*.rs' -exec touch {} + \
 && cargo build --profile dist --locked -p sluice-proxy --bin sluice \
 && strip --strip-debug -o /usr/local/bin/sluice target/dist/sluice \
 && /usr/local/bin/sluice --version

FROM debian:bookworm-slim
RUN groupadd --system --gid 10033 sluice \
 && useradd --system --uid 10033 --gid sluice --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "Sluice MySQL proxy" sluice
COPY --from=builder /usr/local/bin/sluice /usr/bin/sluice
COPY examples/sluice.toml /etc/sluice/sluice.toml
RUN chown root:sluice /etc/sluice/sluice.toml && chmod 0640 /etc/sluice/sluice.toml
USER sluice
# MySQL clients (server.listen) and the admin endpoint (server.admin_listen:
# /metrics, /healthz, /status; loopback unless the config says otherwise).
EXPOSE 6033 9033
# /healthz through server.admin_listen of the config (inside the container).
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
  CMD ["sluice", "--config", "/etc/sluice/sluice.toml", "healthcheck"]
# SIGTERM drains (server.shutdown_timeout_ms, 30 s by default): give
# `docker stop` more than that (--stop-timeout 45, or stop_grace_period in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice"]
CMD ["--config", "/etc/sluice/sluice.toml"]

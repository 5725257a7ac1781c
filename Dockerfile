# airdock's image, built offline: nothing is pulled. `cargo build --release` makes a static,
# stripped binary (.cargo/config.toml, Cargo.toml's release profile); this copies it into an
# empty image:
#
#   cargo build --release && docker build -t airdock .
#
# Dockerfile.connected builds the same image on a machine that can pull rust:1-bookworm.
FROM scratch
# /data exists, owned by the airdock user, so that a fresh volume mounted there is writable.
COPY --chown=10001:10001 deploy/image/data/ /data/
COPY target/x86_64-unknown-linux-gnu/release/airdock /airdock
# A numeric user: there is no /etc/passwd to name one in.
USER 10001:10001
VOLUME /data
EXPOSE 5000
ENV AIRDOCK_ADDR=0.0.0.0:5000 AIRDOCK_DATA_DIR=/data
# `airdock health` asks /readyz on the port of AIRDOCK_ADDR (HTTPS when AIRDOCK_TLS_CERT is set).
HEALTHCHECK --interval=10s --timeout=6s --start-period=5s --retries=3 CMD ["/airdock", "health"]
ENTRYPOINT ["/airdock"]
CMD ["serve"]

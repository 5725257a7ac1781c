# airdock in a container: one static-ish binary on a slim base, data in /data.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin airdock

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data airdock && mkdir -p /data && chown airdock /data
COPY --from=build /src/target/release/airdock /usr/local/bin/airdock
USER airdock
VOLUME /data
EXPOSE 5000
ENV AIRDOCK_ADDR=0.0.0.0:5000 AIRDOCK_DATA_DIR=/data
ENTRYPOINT ["/usr/local/bin/airdock"]
CMD ["serve"]

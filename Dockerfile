# Townhall in a container: `docker build -t townhall .`, then
#   docker run -p 8080:8080 -p 8443:8443/udp -v townhall-data:/var/lib/townhall \
#     -e TOWNHALL_API_KEY=my-node -e TOWNHALL_API_SECRET="$(openssl rand -hex 32)" townhall
# (/etc/townhall/townhall.toml inside is deploy/townhall.toml; mount your own over it.)
# The Rust image's C compiler is all the build needs: libopus and AWS-LC compile with the `cc`
# crate (vendor/opusic-sys/README.md), no cmake.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin townhall

FROM debian:bookworm-slim
RUN useradd --system --home-dir /var/lib/townhall --shell /usr/sbin/nologin townhall \
    && install -d -o townhall -g townhall -m 0700 /var/lib/townhall \
    && install -d /etc/townhall
COPY --from=build /src/target/release/townhall /usr/bin/townhall
COPY deploy/townhall.toml /etc/townhall/townhall.toml
# WebRTC's UDP port is fixed here so it can be published (-p 8443:8443/udp); peers outside
# need the host's address advertised: set webrtc_advertise in a config mounted over this one.
RUN sed -i 's/^# webrtc_udp = /webrtc_udp = /' /etc/townhall/townhall.toml
ENV TOWNHALL_LOG=info TOWNHALL_LOG_FORMAT=json
USER townhall
EXPOSE 8080/tcp 8443/udp
VOLUME /var/lib/townhall
ENTRYPOINT ["/usr/bin/townhall"]
CMD ["serve", "--config", "/etc/townhall/townhall.toml"]

# Switchboard: one image, every binary; the command picks the part.
#   auth | messaging | migrate | healthcheck URL
# Build:  docker build -t switchboard --build-arg SWITCHBOARD_REVISION=$(git rev-parse HEAD) .

FROM rust:1-slim-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
# The source revision, for the switchboard_build_info metric ("unknown" when not given).
ARG SWITCHBOARD_REVISION=unknown
ENV SWITCHBOARD_REVISION=${SWITCHBOARD_REVISION}
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/auth target/release/messaging target/release/migrate \
       target/release/healthcheck /out/

# The NGINX front with the web client built in (content-hashed assets, scripts/build-web.sh);
# the nginx/ template is mounted (compose) or comes from a ConfigMap (k8s).
#   docker build --target web -t switchboard-web .
# NGINX's stable line (1.30; 1.27 and 1.28 are end-of-life), Debian-based (bash for the build).
FROM nginxinc/nginx-unprivileged:1.30 AS web
USER root
COPY web/index.html /src/web/index.html
COPY web/sw.js /src/web/sw.js
COPY web/assets /src/web/assets
COPY scripts/build-web.sh /src/scripts/build-web.sh
# The edge's trace context (switchboard.conf.template imports it with njs, which the image
# ships as a module: loaded here, in the main context), and the edge-span shipper its sidecar
# runs (python3; /var/log/edge is the span file's volume, writable by NGINX's uid 101).
COPY nginx/edge_trace.js /etc/nginx/njs/edge_trace.js
COPY scripts/edge_spans.py /usr/local/bin/edge_spans.py
# default.conf also listens on 8080 and would take requests first: only ours is served.
RUN bash /src/scripts/build-web.sh /usr/share/switchboard/web \
 && rm -rf /src /etc/nginx/conf.d/default.conf \
 && apt-get update && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o 101 -g 101 /var/log/edge \
 && sed -i '1i load_module modules/ngx_http_js_module.so;' /etc/nginx/nginx.conf
USER 101
ENV WEB_ROOT=/usr/share/switchboard/web

# The services (the default target, last). distroless/cc: glibc, libssl3 (passkeys link
# OpenSSL) and libgcc, no shell;
# runs as uid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# Migrations are compiled into the binaries (refinery); the SQL ships for reference.
COPY migrations /usr/share/switchboard/migrations
USER 65532:65532
ENV LOG_FORMAT=json
EXPOSE 8081 8082 9181 9182
HEALTHCHECK --interval=10s --timeout=4s --retries=3 \
  CMD ["/usr/local/bin/healthcheck", "http://127.0.0.1:8082/api/healthz"]
ENTRYPOINT []
CMD ["/usr/local/bin/messaging"]

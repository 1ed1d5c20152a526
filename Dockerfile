# syntax=docker/dockerfile:1
#
# wsgate container image.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t wsgate .
#
# The build stage runs `make build`, the same target developers and CI use, so the
# image carries exactly the binary the Makefile describes (CGO_ENABLED=0, -trimpath,
# -s -w, version stamped through -X main.version). The final stage is distroless
# static: no shell, no package manager, CA certificates and tzdata included, and it
# runs as the numeric non-root UID 65532 so Kubernetes' runAsNonRoot can verify it.
#
# Release pipelines should pin both base images by digest (FROM image@sha256:...).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Module downloads get their own layer so source edits don't refetch them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN make build VERSION=${VERSION}

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="wsgate" \
      org.opencontainers.image.description="WebSocket auth sidecar: verifies JWTs, proxies to an upstream WebSocket, bridges Redis Pub/Sub" \
      org.opencontainers.image.source="https://github.com/wsgate/wsgate" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /src/bin/wsgate /wsgate
USER 65532:65532
# 8080: public listener (WebSocket routes, /auth/verify). 9090: admin (/healthz, /readyz, /metrics, /publish).
EXPOSE 8080 9090
ENTRYPOINT ["/wsgate"]
CMD ["serve", "--config", "/etc/wsgate/config.yaml"]

# syntax=docker/dockerfile:1
#
# One image, three binaries: /usr/local/bin/api (the default), /usr/local/bin/worker and
# /usr/local/bin/linkhop (the command line for users of a service, docs/cli.md).
#   docker build -t ghcr.io/linkhop/linkhop:dev .
#   docker run --rm -p 8080:8080 -e REDIS_URL=redis://host.docker.internal:6379/0 ghcr.io/linkhop/linkhop:dev
#   docker run --rm --entrypoint /usr/local/bin/worker ghcr.io/linkhop/linkhop:dev
#   docker run --rm -e LINKHOP_URL -e LINKHOP_API_KEY --entrypoint /usr/local/bin/linkhop ghcr.io/linkhop/linkhop:dev account
# Multi-platform builds cross-compile on the build host (no emulation):
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/linkhop/linkhop:TAG .

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so editing the code does not invalidate the download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG TARGETOS TARGETARCH
# The version logged at start, sent in the webhooks' User-Agent and reported by `linkhop mcp`:
#   docker build --build-arg VERSION=v1.2.3 …
ARG VERSION=dev
# The VCS revision, for `--version` and linkhop_build_info (.git is not in the build context):
#   docker build --build-arg REVISION=$(git rev-parse --short=12 HEAD) …
ARG REVISION=unknown
# CGO off: static binaries that run on a base with no libc. -trimpath keeps the build
# machine's paths out of the binaries; -s -w drops the symbol tables (stack traces keep
# function names and lines).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w -X github.com/linkhop/linkhop/internal/buildinfo.Version=${VERSION} -X github.com/linkhop/linkhop/internal/buildinfo.stampedRevision=${REVISION}" \
      -o /out/ ./cmd/api ./cmd/worker ./cmd/linkhop

# distroless/static: CA certificates and tzdata, no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="linkhop" \
      org.opencontainers.image.description="Resolves short and ad-gated links to their destination, asynchronously, for API clients" \
      org.opencontainers.image.source="https://github.com/linkhop/linkhop" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/api /usr/local/bin/api
COPY --from=build /out/worker /usr/local/bin/worker
COPY --from=build /out/linkhop /usr/local/bin/linkhop
# Numeric, so Kubernetes can verify runAsNonRoot; 65532 is distroless' "nonroot".
USER 65532:65532
# api HTTP_ADDR :8080; worker (health and metrics only) :9090.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/api"]

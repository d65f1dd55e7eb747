# The redis-consul-agent image: the agent plus redis-server, redis-sentinel,
# nutcracker and haproxy (2.6 in bookworm) from Debian, so that one image serves every role of the demo stack
# (docker-compose.yml); deploy/docker/rca-node.sh picks the role from RCA_ROLE.
#
#   docker build -t redis-consul-agent .
#
# The agent is compiled in the `build` stage. Where no Go image can be pulled,
# build the binary outside and copy it in instead (needs BuildKit, which skips
# the unused stage; integration/compose/stack.sh does this):
#
#   CGO_ENABLED=0 go build -trimpath -o bin/docker/redis-consul-agent ./cmd/redis-consul-agent
#   DOCKER_BUILDKIT=1 docker build --build-arg AGENT_FROM=prebuilt -t redis-consul-agent .
ARG BASE_IMAGE=debian:bookworm-slim
ARG GO_IMAGE=golang:1.26
# build: compile in the image; prebuilt: take bin/docker/redis-consul-agent.
ARG AGENT_FROM=build

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=docker
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/seed42ef8afe/redis-consul-agent/agent/buildinfo.Version=${VERSION} -X github.com/seed42ef8afe/redis-consul-agent/agent/buildinfo.Commit=${COMMIT}" \
      -o /out/redis-consul-agent ./cmd/redis-consul-agent

FROM scratch AS prebuilt
COPY bin/docker/redis-consul-agent /out/redis-consul-agent

FROM ${AGENT_FROM} AS agent

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="redis-consul-agent" \
      org.opencontainers.image.description="redis-consul-agent with redis-server, redis-sentinel, nutcracker and haproxy" \
      org.opencontainers.image.source="https://github.com/seed42ef8afe/redis-consul-agent" \
      io.github.seed42ef8afe.rca.image="agent"
# Debian's packages try to start their services: nothing runs init here.
RUN set -eux; \
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        redis-server redis-sentinel redis-tools nutcracker haproxy tini ca-certificates; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    useradd --system --create-home --home-dir /var/lib/rca --shell /usr/sbin/nologin rca
COPY --from=agent /out/redis-consul-agent /usr/local/bin/redis-consul-agent
COPY deploy/docker/rca-node.sh /usr/local/bin/rca-node
USER rca
WORKDIR /var/lib/rca
# 6379 Redis, 26379 Sentinel, 22121 the twemproxy pool, 22222 nutcracker stats,
# 6380.. the HAProxy frontends, 8404 HAProxy's Prometheus exporter,
# 8765 the agent's status API, metrics and dashboard.
EXPOSE 6379 26379 22121 22222 6380 6381 8404 8765
ENTRYPOINT ["tini", "--", "rca-node"]

# The `scoreboard` binary. One image serves every role (`scoreboard gateway|worker|push|…`).
#
# librdkafka: Debian bookworm's 2.0.2 is too old (it cannot talk to current brokers' API versions as we need and
# lacks DescribeTopics), so the build takes the current runtime that PyPI's confluent-kafka wheel ships, exactly
# as the local stack does (scripts/stack.sh rdkafka-runtime), and the image carries it in /opt/scoreboard/lib.

FROM swift:6.1-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librdkafka-dev libhiredis-dev libssl-dev pkg-config patchelf python3-pip \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m pip install --break-system-packages -q "confluent-kafka>=2.6"
WORKDIR /build
COPY Package.swift Package.resolved ./
COPY Sources ./Sources
COPY Tests ./Tests
COPY scripts ./scripts
RUN scripts/stack.sh rdkafka-runtime
RUN swift build -c release --product scoreboard --static-swift-stdlib \
 && mkdir -p /staging/bin /staging/lib \
 && cp "$(swift build -c release --show-bin-path)/scoreboard" /staging/bin/ \
 && cp -R "$(swift build -c release --show-bin-path)"/*.resources /staging/bin/ \
 && cp -a .local/rdkafka/lib/. /staging/lib/

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libhiredis0.14 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 scoreboard \
 # A new named volume mounted here takes this ownership, so `token init-local` can write the first keys.
 && mkdir /keys && chown scoreboard /keys
COPY --from=build /staging/bin/ /opt/scoreboard/bin/
COPY --from=build /staging/lib/ /opt/scoreboard/lib/
COPY topics /opt/scoreboard/topics
COPY pipelines /opt/scoreboard/pipelines
COPY analytics/metrics.yaml /opt/scoreboard/analytics/metrics.yaml
ENV LD_LIBRARY_PATH=/opt/scoreboard/lib \
    SCOREBOARD_HOME=/opt/scoreboard \
    PATH=/opt/scoreboard/bin:$PATH
USER scoreboard
WORKDIR /opt/scoreboard
ENTRYPOINT ["scoreboard"]
CMD ["doctor"]

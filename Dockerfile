# syntax=docker/dockerfile:1
# One image for both services:
#   docker run IMAGE writer  [options]     docker run IMAGE sidecar [options]
# Options are flags or PROOFGATE_* variables; both services listen on loopback by default, so
# set e.g. PROOFGATE_GRPC_LISTEN=0.0.0.0:50051 to reach them from outside the container.

ARG NODE_VERSION=20

# ---------------------------------------------------------------------------------------------
# build: compile TypeScript and better-sqlite3's native module, then drop dev dependencies.
FROM node:${NODE_VERSION}-bookworm AS build
WORKDIR /app

# Compile better-sqlite3 from source here (python3, make and g++ are in this image) against
# this Node's own headers, rather than downloading a prebuilt binary: the runtime stage uses the
# same Node version and Debian release, so the module loads there unchanged.
ENV npm_config_build_from_source=better-sqlite3 \
    npm_config_nodedir=/usr/local \
    npm_config_update_notifier=false

COPY package.json package-lock.json ./
RUN npm ci --no-fund --no-audit \
 && node -e "const D=require('better-sqlite3'); new D(':memory:').prepare('select 1').get()"

COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --no-fund --no-audit \
 && node -e "require('better-sqlite3')" \
 && rm -rf /root/.npm

# ---------------------------------------------------------------------------------------------
# runtime: Node and the compiled app only, as an unprivileged user.
FROM node:${NODE_VERSION}-bookworm-slim AS runtime

# Data files live outside the (read-only) app directory; mount volumes at /var/lib/proofgate.
ENV NODE_ENV=production \
    PROOFGATE_LEDGER=/var/lib/proofgate/ledger.db \
    PROOFGATE_REPLICA=/var/lib/proofgate/replica.db

RUN groupadd --system --gid 10001 proofgate \
 && useradd --system --uid 10001 --gid proofgate --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin proofgate \
 && mkdir -p /var/lib/proofgate /var/run/proofgate \
 && chown proofgate:proofgate /var/lib/proofgate /var/run/proofgate

WORKDIR /app
# Owned by root and not writable by the service user: the app cannot modify itself.
# package.json carries "type": "module"; proto/ is read at runtime for gRPC reflection;
# examples/ holds the demo catalog.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY proto ./proto
COPY examples ./examples

USER 10001:10001
# writer gRPC, writer HTTP, sidecar gRPC, sidecar HTTP (defaults; see --help of each service).
EXPOSE 50051 9090 50061 9091
ENTRYPOINT ["node", "bin/proofgate.js"]
CMD ["--help"]

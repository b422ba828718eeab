# sgw-reach in a container: a one-shot check, a watch with a health
# check, or a support bundle (see "Container" in README.md).
#
# BASE is any Debian-like image with Python 3.11 or newer and its venv
# module, in /usr/bin or /usr/local/bin: python:3.11-slim, or one made
# locally (the container tests build one with debootstrap).
ARG BASE=python:3.11-slim

# Build: the agent and its dependencies in a virtual environment, without
# the pip and setuptools that installed them.
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY probes ./probes
COPY rules ./rules
RUN python3 -m venv /opt/sgw-reach \
    && /opt/sgw-reach/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/sgw-reach/bin/pip uninstall --yes --quiet pip setuptools

# Run: the environment, a second interpreter that may open raw sockets,
# the launcher that picks between the two, and an unprivileged user.
FROM ${BASE}
COPY --from=build /opt/sgw-reach /opt/sgw-reach

# The path diagnostics need CAP_NET_RAW. A copy of the interpreter gets it
# as a file capability, permitted and effective, written as the kernel's
# VFS_CAP_REVISION_2 record (linux/capability.h: magic and flags, then
# permitted and inheritable words; CAP_NET_RAW is bit 13), so no libcap
# tools are needed here. The kernel refuses to start a program whose file
# capabilities are outside the container's bounding set, so the launcher
# runs this copy only when the bounding set holds CAP_NET_RAW (Docker's
# default, or --cap-add NET_RAW), else the plain interpreter, and the
# agent says how to grant the capability when a diagnosis needs it. It
# runs Python isolated (-I): nothing in the working directory, a mounted
# folder, can be imported by the capable interpreter.
RUN real="$(readlink -f /opt/sgw-reach/bin/python3)" \
    && cp "$real" /opt/sgw-reach/bin/python3-netraw \
    && /opt/sgw-reach/bin/python3 -c "import os, struct; os.setxattr( \
        '/opt/sgw-reach/bin/python3-netraw', 'security.capability', \
        struct.pack('<5I', 0x02000001, 1 << 13, 0, 0, 0))" \
    && printf '%s\n' \
        '#!/bin/sh' \
        '# Start sgw-reach with the interpreter that holds CAP_NET_RAW when' \
        '# the bounding set allows it: the kernel refuses to start it if not.' \
        'python=/opt/sgw-reach/bin/python3' \
        'while read -r key value; do' \
        '    if [ "$key" = CapBnd: ] && [ $((0x$value >> 13 & 1)) -eq 1 ]; then' \
        '        python=/opt/sgw-reach/bin/python3-netraw' \
        '    fi' \
        'done < /proc/self/status' \
        'exec "$python" -I -m agent "$@"' \
        > /opt/sgw-reach/bin/sgw-reach \
    && chmod 755 /opt/sgw-reach/bin/sgw-reach \
    && useradd --uid 10001 --home-dir /var/lib/sgw-reach --no-create-home \
        --shell /usr/sbin/nologin sgw \
    && mkdir -p /reports /var/lib/sgw-reach \
    && chown sgw:sgw /reports /var/lib/sgw-reach

# A watch keeps its store and log in the state directory: mount a volume
# there to keep the history across containers.
ENV PATH=/opt/sgw-reach/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    SGW_REACH_STATE_DIR=/var/lib/sgw-reach
USER sgw
WORKDIR /reports

# For `watch --listen ADDR:9877` (0.0.0.0 or 127.0.0.1): /healthz answers
# 200 when the last round passed, 503 when not. A one-shot check ends
# before the first health check runs. SGW_REACH_HEALTH_PORT names another
# port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python3 -I -c "import os, urllib.request; urllib.request.urlopen( \
        'http://127.0.0.1:%s/healthz' % os.environ.get( \
        'SGW_REACH_HEALTH_PORT', '9877'), timeout=4)" || exit 1

ENTRYPOINT ["sgw-reach"]
CMD ["--help"]

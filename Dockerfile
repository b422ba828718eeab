# sgw-reach as a one-shot container:
#   docker run --rm --network host sgw-reach check --type file --region R ...
# BASE is any image with Python 3.11 or newer in /usr/local/bin or /usr/bin.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY probes ./probes
COPY rules ./rules
RUN python3 -m venv /opt/sgw-reach \
    && /opt/sgw-reach/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM ${BASE}
COPY --from=build /opt/sgw-reach /opt/sgw-reach
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sgw \
    && mkdir -p /reports && chown sgw /reports
ENV PATH=/opt/sgw-reach/bin:$PATH PYTHONDONTWRITEBYTECODE=1
USER sgw
WORKDIR /reports
ENTRYPOINT ["sgw-reach"]
CMD ["--help"]

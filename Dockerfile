# convgen: one image for both services and the CLI.
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first (pinned by constraints.txt) so code changes do not reinstall them.
COPY pyproject.toml constraints.txt README.md ./
COPY convgen ./convgen
COPY generation_service ./generation_service
COPY batch_service ./batch_service
COPY clients ./clients
COPY server_commands ./server_commands
RUN pip install -c constraints.txt . \
    && useradd --system --uid 10001 --home-dir /app convgen \
    && mkdir -p /data && chown convgen /data

USER convgen
# Services listen on all interfaces inside the container; callers authenticate with AUTH_TOKENS.
ENV LISTEN_HOST=0.0.0.0 \
    CONVGEN_DATA_DIR=/data

EXPOSE 50051 50052
ENTRYPOINT ["convgen"]
CMD ["serve", "all"]

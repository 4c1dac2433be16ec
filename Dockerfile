# vaultgate on the embedded SQLite store or an external Redis.
# Build: docker build -t vaultgate .
# Run:   docker run -p 8080:8080 -e VAULTGATE_LISTEN=0.0.0.0:8080 \
#          -e VAULTGATE_DEVELOPMENT=false -e VAULTGATE_KEYS="$(cat keys.yaml)" vaultgate
FROM python:3.13-slim

RUN useradd --system --home-dir /srv/vaultgate --create-home vaultgate
WORKDIR /srv/vaultgate

COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . && rm -rf gateway pyproject.toml README.md

COPY config.example.yaml ./config.yaml
COPY routes ./routes

USER vaultgate
ENV VAULTGATE_LISTEN=0.0.0.0:8080
EXPOSE 8080
CMD ["vaultgate", "run", "-c", "config.yaml"]

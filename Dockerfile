# The app image for docker-compose.yml (not used by the tests; see README).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md main.py ./
COPY bus ./bus
COPY checkout ./checkout
COPY modules ./modules
RUN pip install --no-cache-dir .
ENTRYPOINT ["python", "main.py", "--host", "0.0.0.0", "--data-dir", "/data"]

# The app image for docker-compose.yml (not used by the tests; see README).
# Dependencies come from requirements.lock, every hash checked; then the app, without
# resolving anything again.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md main.py ./
COPY bus ./bus
COPY checkout ./checkout
COPY modules ./modules
COPY web ./web
RUN pip install --no-cache-dir --no-deps .
ENTRYPOINT ["python", "main.py", "--host", "0.0.0.0", "--data-dir", "/data"]

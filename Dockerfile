FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY setup.cfg pyproject.toml README.md ./
COPY ai_service ai_service
COPY worker worker
COPY alembic alembic
COPY alembic.ini Procfile ./
RUN pip install --no-cache-dir -e . && useradd --system app
USER app
EXPOSE 8080
CMD ["gunicorn", "--config", "python:ai_service.gunicorn_conf", "ai_service.app:create_app()"]

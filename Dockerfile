FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY platform ./platform
COPY predictor ./predictor
COPY campaigns ./campaigns
COPY abtest ./abtest
COPY manage.py ./
RUN pip install --no-cache-dir -e .
# Compressed copies of the static files for whitenoise (it also serves them from the apps).
RUN SECRET_KEY=collectstatic-only DEBUG=0 python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "incentive_platform.wsgi:application", "--bind", "0.0.0.0:8000"]

# tuner with CUDA-enabled PyTorch (the regular wheels bring their CUDA libraries).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 1000 tuner
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tuner ./tuner
RUN pip install .

USER tuner
WORKDIR /home/tuner
STOPSIGNAL SIGTERM
CMD ["tuner", "--help"]

# One image for the Python services (api, worker, beat, dashboard); the command picks the role.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md constraints.txt ./
COPY fedledger ./fedledger
COPY app ./app
COPY db ./db
COPY middleware ./middleware
COPY aggregator ./aggregator
COPY client ./client
COPY visualization ./visualization
COPY scripts ./scripts
RUN pip install --no-cache-dir -c constraints.txt . \
 && useradd --system --create-home fedledger && mkdir -p /data && chown fedledger /data
USER fedledger
EXPOSE 8000 8501
CMD ["fedledger", "api"]

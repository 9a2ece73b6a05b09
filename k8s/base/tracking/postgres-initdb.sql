-- Run once by the postgres image's entrypoint (as the superuser, over the local socket) when the
-- data volume is first initialised: MLflow gets its own login role owning the `mlflow` database,
-- so the superuser password never leaves the PostgreSQL pod.
-- The password comes from the environment (MLFLOW_DB_PASSWORD, Secret `mlflow-db`): never in this
-- file or on a command line. If it is unset, :'mlflow_password' stays unexpanded, the statement
-- below is a syntax error and initialisation fails (ON_ERROR_STOP); if short, it fails too.
\set ON_ERROR_STOP on
\getenv mlflow_password MLFLOW_DB_PASSWORD
SELECT length(:'mlflow_password') >= 16 AS mlflow_password_ok \gset
\if :mlflow_password_ok
\else
  DO $$ BEGIN RAISE EXCEPTION 'MLFLOW_DB_PASSWORD (Secret mlflow-db) is shorter than 16 characters'; END $$;
\endif
CREATE ROLE mlflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'mlflow_password';
-- The owner of the database (POSTGRES_DB) also owns its public schema (pg_database_owner, PG 15+),
-- so MLflow can create and migrate its tables there, and nothing more.
ALTER DATABASE :"DBNAME" OWNER TO mlflow;
REVOKE ALL ON DATABASE :"DBNAME" FROM PUBLIC;

-- Sample employee logins for `pgwarden demo`. Each may read every table at
-- the database level; pgwarden's policy decides what each actually sees.
-- The password of each login is its name.
SET password_encryption = 'scram-sha-256';
CREATE ROLE agent_li LOGIN PASSWORD 'agent_li';
CREATE ROLE courier_zhao LOGIN PASSWORD 'courier_zhao';
CREATE ROLE analyst_wu LOGIN PASSWORD 'analyst_wu';
CREATE ROLE dba_zhang LOGIN PASSWORD 'dba_zhang';
CREATE ROLE intern_sun LOGIN PASSWORD 'intern_sun';
CREATE ROLE pgwarden LOGIN PASSWORD 'pgwarden-catalog' IN ROLE pg_read_all_data;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO agent_li, courier_zhao, analyst_wu, dba_zhang, intern_sun;
GRANT ALL ON ALL TABLES IN SCHEMA public TO dba_zhang;

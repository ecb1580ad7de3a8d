-- Every user-visible relation with its columns, in attribute order.
-- View definitions are read too: views carry the classification of what
-- they select. System relations (pg_catalog, information_schema) are listed
-- without their definitions: names resolve the way the server resolves
-- them, and they hold no customer data.
SELECT c.oid::int8                                   AS oid,
       n.nspname::text                               AS schema,
       c.relname::text                               AS name,
       c.relkind::text                               AS kind,
       a.attnum::int2                                AS attnum,
       a.attname::text                               AS column_name,
       a.atttypid::int8                              AS type_oid,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name,
       CASE WHEN c.relkind IN ('v', 'm')
                 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            THEN pg_catalog.pg_get_viewdef(c.oid) END AS view_sql
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp\_%'
ORDER BY c.oid, a.attnum

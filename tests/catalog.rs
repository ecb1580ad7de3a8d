//! The catalog account reads the real schema: relations, columns and types,
//! view definitions, oids that match what RowDescription reports, and name
//! resolution the way PostgreSQL does it.

mod common;

use common::*;
use pgwarden::catalog::schema::{RelKind, expand_search_path, fold_identifier};
use pgwarden::policy::QualifiedTable;

#[tokio::test]
async fn reads_the_schema_of_a_database() {
    let db = unique("catalogdb");
    fixture()
        .cluster
        .psql("postgres", &format!("create database {db}"))
        .unwrap();
    fixture()
        .cluster
        .psql(
            &db,
            &format!(
                "create table public.customers (id int primary key, name text, phone varchar(20), dropped int);
                 alter table public.customers drop column dropped;
                 alter table public.customers add column id_number text;
                 create schema sales;
                 create table sales.\"Orders\" (id bigint, customer_id int, total numeric(10,2));
                 create view public.support_view as select id, name, phone from public.customers;
                 create materialized view public.mv as select count(*) as n from public.customers;
                 grant usage on schema sales to {cat};",
                cat = CATALOG_USER.0
            ),
        )
        .unwrap();
    let proxy = start_proxy(&format!(
        "[catalog]\nuser = \"{}\"\npassword = \"{}\"\n",
        CATALOG_USER.0, CATALOG_USER.1
    ))
    .await;
    let schema = proxy
        .context
        .catalog
        .schema(&db)
        .await
        .expect("schema loads");

    let customers = schema
        .get(&QualifiedTable::parse("public.customers").unwrap())
        .unwrap();
    assert_eq!(customers.kind, RelKind::Table);
    let names: Vec<_> = customers.columns.iter().map(|c| c.name.as_str()).collect();
    // Dropped columns are gone; attnums keep their gaps like the server's.
    assert_eq!(names, vec!["id", "name", "phone", "id_number"]);
    assert_eq!(
        customers.column("phone").unwrap().type_name,
        "character varying(20)"
    );
    assert_eq!(customers.column("id_number").unwrap().attnum, 5);

    let orders = schema
        .resolve(Some("sales"), &fold_identifier("Orders", true), &[])
        .unwrap();
    assert_eq!(orders.column("total").unwrap().type_name, "numeric(10,2)");
    assert!(
        schema
            .resolve(Some("sales"), &fold_identifier("Orders", false), &[])
            .is_none()
    );

    let view = schema
        .resolve(
            None,
            "support_view",
            &expand_search_path("\"$user\", public", "alice"),
        )
        .unwrap();
    assert_eq!(view.kind, RelKind::View);
    assert!(
        view.view_sql.as_deref().unwrap().contains("customers"),
        "{:?}",
        view.view_sql
    );
    assert_eq!(
        schema
            .get(&QualifiedTable::parse("public.mv").unwrap())
            .unwrap()
            .kind,
        RelKind::MaterializedView
    );

    // RowDescription's table oid and attnum point at the same column.
    let client = connect(&proxy, SCRAM_USER).await;
    drop(client);
    let direct = {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(fixture().cluster.port)
            .user("postgres")
            .dbname(&db);
        let (client, conn) = c.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    };
    let stmt = direct
        .prepare("select phone from public.customers")
        .await
        .unwrap();
    let field = &stmt.columns()[0];
    let (rel, col) = schema
        .column_by_oid(field.table_oid().unwrap(), field.column_id().unwrap())
        .unwrap();
    assert_eq!(
        (rel.name.table.as_str(), col.name.as_str()),
        ("customers", "phone")
    );

    // Cached until invalidated.
    direct
        .batch_execute("alter table public.customers add column email text")
        .await
        .unwrap();
    let cached = proxy.context.catalog.schema(&db).await.unwrap();
    assert!(
        cached
            .get(&QualifiedTable::parse("public.customers").unwrap())
            .unwrap()
            .column("email")
            .is_none()
    );
    proxy.context.catalog.invalidate(&db);
    let fresh = proxy.context.catalog.schema(&db).await.unwrap();
    assert!(
        fresh
            .get(&QualifiedTable::parse("public.customers").unwrap())
            .unwrap()
            .column("email")
            .is_some()
    );
}

#[tokio::test]
async fn ddl_through_the_proxy_refreshes_the_schema() {
    let proxy = start_proxy(&format!(
        "[catalog]\nuser = \"{}\"\npassword = \"{}\"\n",
        CATALOG_USER.0, CATALOG_USER.1
    ))
    .await;
    let schema = proxy.context.catalog.schema("app").await.unwrap();
    let table = unique("ddl_t");
    assert!(
        schema
            .get(&QualifiedTable::parse(&format!("public.{table}")).unwrap())
            .is_none()
    );
    let client = connect(&proxy, SCRAM_USER).await;
    // A plain query does not drop the cache...
    client.simple_query("select 1").await.unwrap();
    assert!(proxy.context.catalog.is_cached("app"));
    // ...DDL does.
    client
        .batch_execute(&format!("create table {table} (id int)"))
        .await
        .unwrap();
    assert!(!proxy.context.catalog.is_cached("app"));
    let schema = proxy.context.catalog.schema("app").await.unwrap();
    assert!(
        schema
            .get(&QualifiedTable::parse(&format!("public.{table}")).unwrap())
            .is_some()
    );
}

#[test]
fn schema_change_tags() {
    use pgwarden::catalog::is_schema_change;
    for t in [
        "CREATE TABLE",
        "ALTER TABLE",
        "DROP VIEW",
        "GRANT",
        "REVOKE",
        "COMMENT",
    ] {
        assert!(is_schema_change(t), "{t}");
    }
    for t in ["SELECT 1", "INSERT 0 1", "UPDATE 3", "COPY 5", "SET"] {
        assert!(!is_schema_change(t), "{t}");
    }
}

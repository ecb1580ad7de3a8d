//! Noninterference: two databases agree on everything a restricted role
//! may see (unclassified columns, the masked form of masked values, the
//! equality structure of hashed values) and differ in everything it may
//! not (the hidden digits and characters, hashed and denied values). Every
//! statement a restricted role sends through pgwarden must give the same
//! results, errors and row counts on both, or be refused on both.
//!
//! The corpus holds attacks of each family of implicit channels (counting,
//! row multiplicity, lost result shapes, protocol state, error details,
//! timing, equality turned into search), each run through the simple and
//! the extended protocol; a generator adds random statements
//! (`NI_GENERATED=N`, `NI_SEED=S`; `bench/noninterference.sh` runs a long
//! one). Results are compared as multisets of rows, and generated LIMITs
//! come with an ORDER BY: which rows an unordered LIMIT returns, and in
//! what order, follows where the server stored them, and so the storage
//! sizes of hidden values (a channel docs/access.md names).

mod common;

use pgwarden::Proxy;
use pgwarden::config::Config;
use pgwarden::demo::postgres::{ClusterOptions, PgCluster};
use pgwarden::policy::MaskSpec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const POLICY: &str = r#"
classify:
  public.customers:
    name: person_name
    phone: phone
    id_number: id_card
    email: email
    address: address
roles:
  support:
    users: [ni_support]
    access: {person_name: mask, phone: mask, email: mask, address: mask, id_card: deny}
    lookup: equality
  analyst:
    users: [ni_analyst]
    access: {person_name: hash, phone: hash, "*": deny}
    lookup: equality
default:
  access: {"*": deny}
"#;

/// The same rows in both databases but for what the roles may not see.
/// `$V` is 0 in one database and 1 in the other.
const DATA: &str = r#"
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, phone text NOT NULL,
  id_number text NOT NULL, email text, address text NOT NULL, city text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, amount int NOT NULL, note text);
INSERT INTO customers
SELECT i,
  substr('张王李赵刘', i % 5 + 1, 1) || substr('伟芳娜敏静丽强磊军洋', (i * 3 + $V * 7) % 10 + 1, 1)
    || CASE WHEN i % 3 = 0 THEN substr('明华', (i + $V) % 2 + 1, 1) ELSE '' END,
  '13' || (i % 10) || lpad(((i * 7919 + $V * 4321) % 10000)::text, 4, '0') || lpad(i::text, 4, '0'),
  '1101' || lpad((i * 31 + $V * 17)::text, 14, '0'),
  CASE WHEN i % 7 = 0 THEN NULL ELSE 'u' || (i * (3 + $V)) || '@ex' || (i % 3) || '.cn' END,
  CASE i % 3 WHEN 0 THEN '广东省深圳市' || substr('南山福田罗湖', ((i + $V) % 3) * 2 + 1, 2) || '区' || (i * (1 + $V)) || '号'
             WHEN 1 THEN '北京市' || substr('朝阳海淀', ((i + $V) % 2) * 2 + 1, 2) || '区' || i || '号'
             ELSE '新疆维吾尔自治区乌鲁木齐市天山区' || (i + $V * 1000) || '号' END,
  (ARRAY['深圳','北京','乌鲁木齐'])[i % 3 + 1]
FROM generate_series(1, 300) i;
-- The one value the corpus looks up by equality (a granted lookup): its
-- presence is what the role may learn, so both databases agree on it.
INSERT INTO customers VALUES (1000, '张三' || substr('伟芳', $V + 1, 1), '13900000000',
  '110105194912310021', 'z@ex.cn', '北京市海淀区' || $V || '号', '北京');
INSERT INTO orders SELECT i, i % 300 + 1, (i * 37) % 1000, CASE WHEN i % 4 = 0 THEN 'gift' END
FROM generate_series(1, 900) i;
CREATE VIEW contact_view AS SELECT id, name, phone, city FROM customers;
"#;

const USERS: &[&str] = &["ni_support", "ni_analyst", "ni_nobody"];

struct World {
    cluster: PgCluster,
    proxy: Proxy,
}

async fn world() -> World {
    // Trusted logins, so that hand-made protocol sessions need no SCRAM.
    let opts = ClusterOptions {
        hba: USERS
            .iter()
            .map(|u| format!("host all {u} 127.0.0.1/32 trust"))
            .collect(),
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::spawn_blocking(move || PgCluster::start(&opts))
        .await
        .unwrap()
        .expect("cluster");
    let mut roles = String::from("SET password_encryption = 'scram-sha-256';\n");
    for u in USERS {
        roles.push_str(&format!("CREATE ROLE {u} LOGIN PASSWORD '{u}';\n"));
    }
    roles.push_str(
        "CREATE ROLE pgwarden LOGIN PASSWORD 'pgwarden-catalog' IN ROLE pg_read_all_data;\n",
    );
    cluster.psql("postgres", &roles).unwrap();
    for (db, v) in [("ni_a", "0"), ("ni_b", "1")] {
        cluster
            .psql("postgres", &format!("CREATE DATABASE {db};"))
            .unwrap();
        cluster.psql(db, &DATA.replace("$V", v)).unwrap();
        cluster
            .psql(
                db,
                &format!(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {};",
                    USERS.join(", ")
                ),
            )
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(dir.join("ni.yaml"), POLICY).unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nupstream = \"{}\"\npolicies = \"{}\"\n\n[catalog]\nuser = \"pgwarden\"\npassword = \"pgwarden-catalog\"\n",
        cluster.addr(),
        dir.display()
    );
    let config = Config::parse(&text, Path::new("/tmp/ni.toml")).unwrap();
    let proxy = Proxy::start(config).await.expect("proxy starts");
    World { cluster, proxy }
}

async fn connect(w: &World, user: &str, db: &str) -> Client {
    let (client, conn) = common::pg_config(&w.proxy, (user, user), db)
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    tokio::spawn(conn);
    client
}

/// Any value, as its bytes in the format the server sent.
struct Raw(Option<Vec<u8>>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw.to_vec())))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!(
            "error {} {} {:?} {:?}",
            d.code().code(),
            d.message(),
            d.detail(),
            d.hint()
        ),
        None => format!("error {e}"),
    }
}

/// What the client sees of one statement through one protocol path.
async fn transcript(
    c: &Client,
    sql: &str,
    extended: bool,
    dml: bool,
    map: &HashMap<String, String>,
) -> String {
    if dml {
        c.simple_query("BEGIN").await.unwrap();
    }
    let out = if extended {
        match c.query(sql, &[]).await {
            Ok(rows) => {
                let mut lines: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| match r.get::<_, Raw>(i).0 {
                                None => "NULL".to_string(),
                                Some(b) => match String::from_utf8(b) {
                                    Ok(t) => format!("{:?}", map.get(&t).unwrap_or(&t)),
                                    Err(e) => format!("{:?}", e.into_bytes()),
                                },
                            })
                            .collect::<Vec<_>>()
                            .join("|")
                    })
                    .collect();
                lines.sort();
                let names = rows
                    .first()
                    .map(|r| {
                        r.columns()
                            .iter()
                            .map(|c| c.name().to_string())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                format!("rows {} {names:?}\n{}", rows.len(), lines.join("\n"))
            }
            Err(e) => describe_error(&e),
        }
    } else {
        match c.simple_query(sql).await {
            Ok(msgs) => {
                let mut out = Vec::new();
                let mut rows = Vec::new();
                for m in msgs {
                    match m {
                        SimpleQueryMessage::Row(r) => rows.push(
                            (0..r.len())
                                .map(|i| {
                                    format!(
                                        "{:?}",
                                        r.get(i).map(|t| map.get(t).map_or(t, |a| a.as_str()))
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join("|"),
                        ),
                        SimpleQueryMessage::CommandComplete(n) => {
                            rows.sort();
                            out.append(&mut rows);
                            out.push(format!("complete {n}"));
                        }
                        SimpleQueryMessage::RowDescription(d) => out.push(format!(
                            "columns {:?}",
                            d.iter().map(|c| c.name().to_string()).collect::<Vec<_>>()
                        )),
                        _ => {}
                    }
                }
                out.join("\n")
            }
            Err(e) => describe_error(&e),
        }
    };
    if dml {
        c.simple_query("ROLLBACK").await.unwrap();
    }
    out
}

/// The analyst's pseudonyms of database B, renamed to A's for the same
/// customer: hashed values keep their equality structure, not their
/// values.
async fn pseudonym_map(w: &World) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let a = connect(w, "ni_analyst", "ni_a").await;
    let b = connect(w, "ni_analyst", "ni_b").await;
    let q = "SELECT id, name, phone FROM customers";
    let ra = a.query(q, &[]).await.unwrap();
    let rb = b.query(q, &[]).await.unwrap();
    let by_id: HashMap<i32, (String, String)> = ra
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    for r in rb {
        let (na, pa) = &by_id[&r.get::<_, i32>(0)];
        map.insert(r.get::<_, String>(1), na.clone());
        map.insert(r.get::<_, String>(2), pa.clone());
    }
    map
}

fn rename(text: &str, map: &HashMap<String, String>) -> String {
    let mut out = text.to_string();
    for (b, a) in map {
        if out.contains(b.as_str()) {
            out = out.replace(b.as_str(), a);
        }
    }
    out
}

/// Attacks by family; each runs as every role through both protocols.
const CORPUS: &[&str] = &[
    // 1. counting and cardinality
    "SELECT count(*) FROM customers WHERE substr(phone, 4, 1) = '5'",
    "SELECT num_nulls(nullif(substr(phone, 4, 1), '5')) FROM customers WHERE id = 1",
    "SELECT count(nullif(phone, '13100000001')) FROM customers",
    "SELECT regr_count(1, CASE WHEN substr(phone, 5, 1) = '3' THEN 1 END) FROM customers",
    "SELECT (SELECT count(*) FROM customers c2 WHERE substr(c2.phone, 4, 4) = substr(c.phone, 4, 4)) FROM customers c WHERE id < 5",
    "SELECT id, (SELECT count(*) FROM generate_series(1, 10) g WHERE g::text = substr(phone, 4, 1)) FROM customers WHERE id < 20",
    "SELECT count(DISTINCT phone), count(DISTINCT name), count(DISTINCT address) FROM customers",
    "SELECT city, count(*) FROM customers GROUP BY city, phone",
    "SELECT length(string_agg(phone, '')) FROM customers",
    "INSERT INTO orders (id, customer_id, amount) SELECT 100000 + id, id, 1 FROM customers WHERE substr(phone, 4, 1) = '7'",
    "UPDATE orders SET note = 'x' WHERE customer_id IN (SELECT id FROM customers WHERE substr(phone, 6, 1) = '2')",
    "SELECT count(*) FROM customers WHERE phone > '135'",
    // 2. set-returning functions and row multiplicity
    "SELECT generate_series(1, (substr(phone, 4, 1) || '0')::int) FROM customers WHERE id = 2",
    "SELECT g FROM customers, generate_series(1, length(phone)) g WHERE id = 3",
    "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM generate_series(0, 9) g WHERE substr(c.phone, 4, 1) = g::text)",
    "SELECT id FROM customers LIMIT (SELECT count(*) FROM customers WHERE phone LIKE '1315%')",
    "SELECT x FROM customers c, LATERAL (SELECT 1 AS x WHERE substr(c.phone, 4, 1) = '0') l",
    "SELECT unnest(string_to_array(phone, '3')) FROM customers WHERE id = 4",
    "SELECT regexp_split_to_table(phone, '') FROM customers WHERE id = 5",
    "SELECT id FROM customers ORDER BY phone, id LIMIT 5",
    "SELECT id, row_number() OVER (ORDER BY phone, id) FROM customers WHERE id < 10",
    "SELECT id FROM customers WHERE phone BETWEEN '1310000000' AND '13150000000' ORDER BY id",
    // 3. result shapes
    "SELECT * FROM (SELECT * FROM generate_series(1, 2) g UNION ALL SELECT phone::int FROM customers) s",
    "SELECT * FROM (SELECT phone, id FROM customers) s(a) WHERE id < 4",
    "SELECT * FROM customers JOIN orders USING (id) WHERE id < 3",
    "SELECT * FROM customers NATURAL JOIN (SELECT id, 1 AS one FROM orders) o WHERE id < 3",
    "SELECT * FROM unnest(ARRAY['a', 'b']) WITH ORDINALITY u, customers c WHERE c.id = 1",
    "WITH RECURSIVE r(n, p) AS (SELECT 1, phone FROM customers WHERE id = 1 UNION ALL SELECT n + 1, substr(p, 2) FROM r WHERE n < 12) SELECT * FROM r",
    "SELECT x FROM (SELECT phone FROM customers UNION SELECT name FROM customers) s(x) ORDER BY 1 LIMIT 5",
    "SELECT row_to_json(c) FROM customers c WHERE id = 6",
    "SELECT c FROM contact_view c WHERE id = 7",
    "SELECT * FROM contact_view WHERE id < 3",
    // 4. protocol and SQL state
    "PREPARE p AS SELECT phone FROM customers WHERE id = 1",
    "DECLARE k CURSOR FOR SELECT phone FROM customers",
    "SELECT phone FROM customers WHERE id = 8; SELECT 1",
    // 5. server error details
    "SELECT phone::int FROM customers WHERE id = 9",
    "SELECT name::date FROM customers WHERE id = 9",
    "SELECT id FROM customers WHERE id = 'x'",
    "INSERT INTO customers (id, city) VALUES (1000, 'x')",
    "UPDATE customers SET city = NULL WHERE id = 10",
    "INSERT INTO customers SELECT * FROM customers WHERE id = 11",
    "SELECT 1 / (CASE WHEN substr(phone, 4, 1) = '0' THEN 0 ELSE 1 END) FROM customers WHERE id = 12",
    "SELECT make_date(2020, 1, substr(phone, 10, 2)::int) FROM customers WHERE id = 13",
    "SELECT to_number(email, '999') FROM customers WHERE id = 14",
    "SELECT phone::regclass FROM customers WHERE id = 15",
    // 6. timing
    "SELECT pg_sleep(substr(phone, 4, 1)::int / 100.0) FROM customers WHERE id = 16",
    "SELECT length(repeat('x', substr(phone, 4, 1)::int * 1000)) FROM customers WHERE id = 16",
    "SELECT count(*) FROM generate_series(1, 1000 * ascii(substr(phone, 5, 1))) FROM customers",
    // 7. equality turned into search
    "SELECT id FROM customers WHERE phone IN (SELECT '131' || lpad(g::text, 4, '0') || '0001' FROM generate_series(0, 9999) g)",
    "SELECT c.id FROM customers c JOIN (SELECT '131' || lpad(g::text, 4, '0') || '0001' AS p FROM generate_series(0, 9999) g) s ON s.p = c.phone",
    "SELECT id FROM customers WHERE phone = ANY(ARRAY(SELECT '131' || lpad(g::text, 4, '0') || '0001' FROM generate_series(0, 9999) g))",
    "SELECT CASE phone WHEN '13100000001' THEN 1 ELSE 0 END FROM customers WHERE id = 1",
    "SELECT id FROM customers WHERE phone = '13900000000' OR phone = '13170010001'",
    "SELECT id FROM customers WHERE phone = (SELECT '139' || '00000000')",
    "SELECT id FROM customers WHERE phone = '139' || '00000000'",
    "SELECT id FROM customers WHERE phone = '13900000000'",
    "SELECT id FROM customers WHERE phone IN ('13900000000', '13100000001')",
    "SELECT id FROM customers WHERE phone = ANY('{13900000000,13100000001}')",
    "SELECT phone FROM customers WHERE id = 1 UNION ALL SELECT '13179190001' UNION ALL SELECT '13122400001'",
    "SELECT count(DISTINCT p) FROM (SELECT phone p FROM customers WHERE id = 1 UNION ALL SELECT '131' || lpad(g::text, 4, '0') || '0001' FROM generate_series(0, 9999) g) x",
    "SELECT name, NULL FROM customers WHERE false UNION ALL SELECT s || g, s || g FROM unnest(ARRAY['张', '王']) s, unnest(ARRAY['伟', '芳']) g",
    // legitimate work
    "SELECT id, name, phone, email, address, city FROM customers WHERE id = 17",
    "SELECT city, count(*) FROM customers GROUP BY city ORDER BY city",
    "SELECT c.id, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id = 18 ORDER BY o.id",
    "SELECT id, name FROM customers ORDER BY id LIMIT 10 OFFSET 20",
    "SELECT * FROM customers WHERE id = 19",
    "SELECT id_number FROM customers WHERE id = 20",
    "COPY (SELECT id, phone, name FROM customers WHERE id < 5) TO STDOUT",
];

fn is_dml(sql: &str) -> bool {
    let l = sql.trim_start().to_ascii_lowercase();
    l.starts_with("insert") || l.starts_with("update") || l.starts_with("delete")
}

/// Run `sql` as `user` on both databases through both protocols; return
/// the first difference.
async fn differs(
    pairs: &HashMap<&str, (Client, Client)>,
    map: &HashMap<String, String>,
    user: &str,
    sql: &str,
) -> Option<String> {
    let (a, b) = &pairs[user];
    for extended in [false, true] {
        if extended && (sql.contains(';') || sql.starts_with("COPY")) {
            continue;
        }
        let dml = is_dml(sql);
        let ta = transcript(a, sql, extended, dml, &HashMap::new()).await;
        let tb = rename(&transcript(b, sql, extended, dml, map).await, map);
        // A simple-protocol SELECT runs again through the prepared
        // statement pgwarden made of its shape: the same on both, and the
        // same as the first time.
        let select = ["select", "with", "(", "values", "table"]
            .iter()
            .any(|k| sql.trim_start().to_ascii_lowercase().starts_with(k));
        if !extended && select && !sql.contains(';') {
            for _ in 0..2 {
                let again_a = transcript(a, sql, false, false, &HashMap::new()).await;
                let again_b = rename(&transcript(b, sql, false, false, map).await, map);
                if again_a != ta || again_b != tb {
                    return Some(format!(
                        "{user} simple, run again {sql}\nA: {ta}\nA again: {again_a}\nB: {tb}\nB again: {again_b}"
                    ));
                }
            }
        }
        // Session state a statement leaves (cursors, prepared statements).
        let _ = a.simple_query("DISCARD ALL").await;
        let _ = b.simple_query("DISCARD ALL").await;
        if ta != tb {
            return Some(format!(
                "{user} {} {sql}\nA: {ta}\nB: {tb}",
                if extended { "extended" } else { "simple" }
            ));
        }
    }
    None
}

async fn pairs(w: &World) -> HashMap<&'static str, (Client, Client)> {
    let mut m = HashMap::new();
    for u in USERS {
        m.insert(
            *u,
            (connect(w, u, "ni_a").await, connect(w, u, "ni_b").await),
        );
    }
    m
}

#[tokio::test]
async fn the_corpus_shows_nothing_hidden() {
    let w = world().await;
    let map = pseudonym_map(&w).await;
    assert!(map.len() > 300, "{}", map.len());
    let p = pairs(&w).await;
    // The databases do differ: a full-access reading would tell them apart.
    let mut leaks = Vec::new();
    let mut allowed = 0;
    for sql in CORPUS {
        for user in USERS {
            if let Some(d) = differs(&p, &map, user, sql).await {
                leaks.push(d);
            }
            let (a, _) = &p[user];
            if a.simple_query(sql).await.is_ok() {
                allowed += 1;
            }
            let _ = a.simple_query("ROLLBACK").await;
            let _ = a.simple_query("DISCARD ALL").await;
        }
    }
    assert!(
        leaks.is_empty(),
        "{} differences:\n{}",
        leaks.len(),
        leaks.join("\n\n")
    );
    // Not everything was refused: the harmless statements ran.
    assert!(allowed > CORPUS.len() / 2, "{allowed}");
    w.proxy.shutdown().await;
}

/// The support desk's work still works, and shows what it should.
#[tokio::test]
async fn lookups_find_the_customer_and_show_the_mask() {
    let w = world().await;
    let c = connect(&w, "ni_support", "ni_a").await;
    let row = c
        .query_one(
            "SELECT id, phone, name FROM customers WHERE phone = $1",
            &[&"13179190001"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, &str>(1), "131****0001");
    let rows = c
        .simple_query("SELECT id FROM customers WHERE phone IN ('13179190001', '13200000000')")
        .await
        .unwrap();
    assert_eq!(
        rows.iter()
            .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
            .count(),
        1
    );
    w.proxy.shutdown().await;
}

/// The SQL form of every mask computes what pgwarden's own masks compute.
#[tokio::test]
async fn sql_masks_agree_with_the_masks() {
    let w = world().await;
    let c = connect(&w, "ni_nobody", "ni_a").await;
    let mut rng = StdRng::seed_from_u64(7);
    let alphabet: Vec<char> = "0123456789ab@.*'张王省市区自治州特别行政区盟地 "
        .chars()
        .collect();
    let mut values: Vec<String> = vec![
        "".into(),
        "a".into(),
        "张".into(),
        "广东省深圳市南山区科技园路1号".into(),
        "北京市朝阳区建国路88号".into(),
        "新疆维吾尔自治区乌鲁木齐市天山区".into(),
        "香港特别行政区".into(),
        "zhang.wei@example.cn".into(),
        "@x".into(),
        "a@".into(),
    ];
    for _ in 0..300 {
        let n = rng.random_range(0..20);
        values.push(
            (0..n)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect(),
        );
    }
    let specs = [
        MaskSpec::Builtin("phone"),
        MaskSpec::Builtin("person_name"),
        MaskSpec::Builtin("id_card"),
        MaskSpec::Builtin("bank_card"),
        MaskSpec::Builtin("email"),
        MaskSpec::Builtin("address"),
        MaskSpec::Builtin("credit_report"),
        MaskSpec::Keep {
            first: 2,
            last: 1,
            fill: '\'',
        },
        MaskSpec::Replace("[it's hidden]".into()),
    ];
    for spec in &specs {
        let sql = format!(
            "SELECT {} FROM unnest($1::text[]) WITH ORDINALITY AS t(v, n) ORDER BY n",
            pgwarden::rewrite::masks::mask_sql(spec, "v", true)
        );
        let rows = c.query(&sql, &[&values]).await.unwrap();
        for (row, v) in rows.iter().zip(&values) {
            let got: Option<String> = row.get(0);
            assert_eq!(
                got.as_deref(),
                Some(pgwarden::masking::mask(spec, v).as_str()),
                "{spec:?} {v:?}"
            );
        }
        let null = c
            .query_one(
                &format!(
                    "SELECT {}, {}",
                    pgwarden::rewrite::masks::mask_sql(spec, "NULL::text", true),
                    pgwarden::rewrite::masks::mask_sql(spec, "NULL::int", false)
                ),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(null.get::<_, Option<String>>(0), None, "{spec:?}");
        assert_eq!(null.get::<_, Option<String>>(1), None, "{spec:?}");
    }
    w.proxy.shutdown().await;
}

/// Statements generated from a small grammar over both tables.
fn generate(rng: &mut StdRng) -> String {
    const COLS: &[&str] = &[
        "id",
        "name",
        "phone",
        "email",
        "address",
        "city",
        "id_number",
    ];
    const FUNCS: &[&str] = &[
        "upper", "lower", "length", "md5", "reverse", "left", "substr", "count", "min", "max",
    ];
    let col = |rng: &mut StdRng| COLS[rng.random_range(0..COLS.len())];
    let expr = |rng: &mut StdRng| -> String {
        let c = col(rng);
        match rng.random_range(0..7) {
            0 => c.to_string(),
            1 => {
                let f = FUNCS[rng.random_range(0..FUNCS.len())];
                match f {
                    "left" => format!("left({c}, {})", rng.random_range(1..6)),
                    "substr" => format!("substr({c}, {}, 1)", rng.random_range(1..12)),
                    f => format!("{f}({c})"),
                }
            }
            2 => format!("{c}::text || '#'"),
            3 => format!(
                "CASE WHEN {c} LIKE '%{}%' THEN 1 ELSE 0 END",
                rng.random_range(0..10)
            ),
            4 => format!(
                "(SELECT count(*) FROM orders o WHERE o.customer_id = c.id AND length(c.{c}) > {})",
                rng.random_range(5..15)
            ),
            5 => format!("coalesce({c}, 'x')"),
            _ => format!("count(DISTINCT {c})"),
        }
    };
    let pred = |rng: &mut StdRng| -> String {
        let c = col(rng);
        match rng.random_range(0..7) {
            0 => format!("{c} = '13900000000'"),
            1 => format!(
                "substr({c}, {}, 1) = '{}'",
                rng.random_range(1..12),
                rng.random_range(0..10)
            ),
            2 => format!("{c} LIKE '1{}%'", rng.random_range(0..10)),
            3 => format!("{c} IS NOT NULL"),
            4 => format!("id < {}", rng.random_range(1..300)),
            5 => format!(
                "{c} IN (SELECT {c} FROM customers WHERE id < {})",
                rng.random_range(1..50)
            ),
            _ => format!("{c} > '{}'", rng.random_range(0..10)),
        }
    };
    let e1 = expr(rng);
    let e2 = expr(rng);
    let p = pred(rng);
    let aggregate = [&e1, &e2]
        .iter()
        .any(|e| e.starts_with("count") || e.starts_with("min") || e.starts_with("max"));
    match rng.random_range(0..6) {
        0 => format!(
            "SELECT {e1}, {e2} FROM customers c WHERE {p}{}",
            if aggregate {
                ""
            } else {
                " ORDER BY c.id LIMIT 20"
            }
        ),
        1 => format!("SELECT count(*) FROM customers c WHERE {p}"),
        2 => format!(
            "SELECT {e1} FROM customers c WHERE {p} UNION ALL SELECT {e2} FROM customers c WHERE id = 1"
        ),
        3 => format!("WITH t AS (SELECT * FROM customers c WHERE {p}) SELECT count(*) FROM t"),
        4 => format!(
            "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE {p} ORDER BY o.id LIMIT 10"
        ),
        _ => format!(
            "UPDATE orders SET note = 'n' WHERE customer_id IN (SELECT id FROM customers c WHERE {p})"
        ),
    }
}

#[tokio::test]
async fn generated_statements_show_nothing_hidden() {
    let n: usize = std::env::var("NI_GENERATED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("NI_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let w = world().await;
    let map = pseudonym_map(&w).await;
    let p = pairs(&w).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut leaks = Vec::new();
    for i in 0..n {
        let sql = generate(&mut rng);
        let user = USERS[i % USERS.len()];
        if let Some(d) = differs(&p, &map, user, &sql).await {
            leaks.push(d);
            if leaks.len() >= 10 {
                break;
            }
        }
    }
    eprintln!(
        "noninterference: {n} generated statements (seed {seed}), {} differences",
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "{} differences:\n{}",
        leaks.len(),
        leaks.join("\n\n")
    );
    w.proxy.shutdown().await;
}

/// A hand-made protocol session: the messages drivers never send in this
/// order.
struct Wire {
    s: tokio::net::TcpStream,
    out: Vec<u8>,
}

impl Wire {
    async fn connect(w: &World, user: &str, db: &str) -> Wire {
        use tokio::io::AsyncWriteExt;
        let mut body = vec![0, 3, 0, 0];
        for (k, v) in [("user", user), ("database", db)] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        startup.extend(body);
        let mut s = tokio::net::TcpStream::connect(w.proxy.addr).await.unwrap();
        s.write_all(&startup).await.unwrap();
        let mut wire = Wire { s, out: Vec::new() };
        wire.answers(1).await;
        wire
    }

    fn msg(&mut self, tag: u8, body: &[u8]) -> &mut Self {
        self.out.push(tag);
        self.out.extend(((body.len() + 4) as i32).to_be_bytes());
        self.out.extend_from_slice(body);
        self
    }

    fn cstrs(parts: &[&str]) -> Vec<u8> {
        let mut b = Vec::new();
        for p in parts {
            b.extend_from_slice(p.as_bytes());
            b.push(0);
        }
        b
    }

    fn parse(&mut self, name: &str, sql: &str) -> &mut Self {
        let mut b = Self::cstrs(&[name, sql]);
        b.extend(0i16.to_be_bytes());
        self.msg(b'P', &b)
    }

    fn bind(&mut self, portal: &str, statement: &str) -> &mut Self {
        let mut b = Self::cstrs(&[portal, statement]);
        b.extend([0, 0, 0, 0, 0, 0]);
        self.msg(b'B', &b)
    }

    fn execute(&mut self, portal: &str) -> &mut Self {
        let mut b = Self::cstrs(&[portal]);
        b.extend(0i32.to_be_bytes());
        self.msg(b'E', &b)
    }

    fn close(&mut self, kind: u8, name: &str) -> &mut Self {
        let mut b = vec![kind];
        b.extend(Self::cstrs(&[name]));
        self.msg(b'C', &b)
    }

    fn sync(&mut self) -> &mut Self {
        self.msg(b'S', &[])
    }

    fn query(&mut self, sql: &str) -> &mut Self {
        let b = Self::cstrs(&[sql]);
        self.msg(b'Q', &b)
    }

    /// Send what was queued and read until `n` ReadyForQuery messages.
    async fn answers(&mut self, n: usize) -> Vec<u8> {
        self.read_until(b'Z', n).await
    }

    /// Send what was queued and read until `n` messages of type `tag`.
    async fn read_until(&mut self, tag: u8, n: usize) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let out = std::mem::take(&mut self.out);
        self.s.write_all(&out).await.unwrap();
        let mut got = Vec::new();
        let mut ready = 0;
        let mut at = 0;
        let mut buf = [0u8; 8192];
        while ready < n {
            let k = tokio::time::timeout(std::time::Duration::from_secs(10), self.s.read(&mut buf))
                .await
                .expect("answers in time")
                .unwrap();
            assert!(k > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..k]);
            while got.len() >= at + 5 {
                let len = i32::from_be_bytes(got[at + 1..at + 5].try_into().unwrap()) as usize;
                if got.len() < at + 1 + len {
                    break;
                }
                if got[at] == tag {
                    ready += 1;
                }
                at += 1 + len;
            }
        }
        got
    }
}

/// The raw values a statement-name trick would be after.
fn raw_values(w: &World) -> Vec<String> {
    w.cluster
        .psql("ni_a", "\\pset format unaligned\n\\pset tuples_only on\nSELECT phone FROM customers UNION ALL SELECT name FROM customers WHERE length(name) > 2")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("13") || l.chars().count() == 3)
        .map(str::to_string)
        .collect()
}

fn assert_hidden(what: &str, bytes: &[u8], raw: &[String]) {
    let text = String::from_utf8_lossy(bytes);
    for v in raw {
        assert!(!text.contains(v.as_str()), "{what}: {v} came back: {text}");
    }
}

/// How many messages of type `tag` `bytes` holds.
fn messages(bytes: &[u8], tag: u8) -> usize {
    let (mut at, mut n) = (0, 0);
    while bytes.len() >= at + 5 {
        let len = i32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        n += usize::from(bytes[at] == tag);
        at += 1 + len;
    }
    n
}

fn refused(bytes: &[u8]) -> bool {
    bytes.windows(7).any(|w| w == b"C42501\0")
}

/// After an error in an extended-protocol batch the server ignores every
/// message up to the Sync, simple Queries included: their answers must
/// not be taken for those of the statements after the Sync (which would
/// then go out unmasked and uncounted).
#[tokio::test]
async fn a_failed_batch_does_not_shift_answers() {
    let w = world().await;
    let raw = raw_values(&w);
    for user in ["ni_analyst", "ni_support"] {
        let mut c = Wire::connect(&w, user, "ni_a").await;
        let got = c
            .parse("", "SELECT 1/0")
            .bind("", "")
            .execute("")
            .query("SELECT 42")
            .query("SELECT name, phone FROM customers WHERE id = 1")
            .sync()
            .answers(1)
            .await;
        assert!(got.windows(6).any(|x| x == b"C22012"), "{user}");
        // The same, with the Query sent once the error came back.
        c.parse("", "SELECT 1/0")
            .bind("", "")
            .execute("")
            .msg(b'H', &[]);
        let got = c.read_until(b'E', 1).await;
        assert!(got.windows(6).any(|x| x == b"C22012"), "{user}");
        let got = c
            .query("SELECT name, phone FROM customers WHERE id = 2")
            .sync()
            .answers(1)
            .await;
        assert_eq!(messages(&got, b'D'), 0, "{user}: the Query was skipped");
        for _ in 0..3 {
            let got = c
                .query("SELECT id, name, phone FROM customers WHERE id <= 3")
                .answers(1)
                .await;
            assert_eq!(messages(&got, b'D'), 3, "{user}");
            assert_hidden(user, &got, &raw);
        }
    }
}

/// The server ignores a Sync sent in COPY-IN mode (drivers send one right
/// after a COPY's Execute): answers must not shift onto later statements,
/// and the session must go on working.
#[tokio::test]
async fn syncs_sent_during_copy_in_do_not_shift_answers() {
    let w = world().await;
    let raw = raw_values(&w);
    for user in ["ni_analyst", "ni_support"] {
        let mut c = Wire::connect(&w, user, "ni_a").await;
        // Simple protocol: a Sync and a Flush inside COPY-IN.
        c.query("COPY orders (id, customer_id, amount) FROM STDIN");
        let got = c.read_until(b'G', 1).await;
        assert_eq!(messages(&got, b'G'), 1, "{user}");
        let got = c.sync().msg(b'H', &[]).msg(b'c', &[]).answers(1).await;
        assert!(got.windows(6).any(|x| x == b"COPY 0"), "{user}");
        c.query("SET application_name = 'x'").answers(1).await;
        for _ in 0..3 {
            let got = c
                .query("SELECT name, phone FROM customers WHERE id < 4")
                .answers(1)
                .await;
            assert_eq!(messages(&got, b'D'), 3, "{user}");
            assert_hidden(user, &got, &raw);
        }
        // Extended protocol: Execute and Sync, then CopyDone and Sync.
        c.parse("", "COPY orders (id, customer_id, amount) FROM STDIN")
            .bind("", "")
            .execute("")
            .sync();
        c.read_until(b'G', 1).await;
        let got = c.msg(b'c', &[]).sync().answers(1).await;
        assert!(got.windows(6).any(|x| x == b"COPY 0"), "{user}");
        for _ in 0..2 {
            let got = c
                .query("SELECT name, phone FROM customers WHERE id < 4")
                .answers(1)
                .await;
            assert_eq!(messages(&got, b'D'), 3, "{user}");
            assert_hidden(user, &got, &raw);
        }
    }
}

/// A chain of thousands of operators or keywords is too deep to analyse:
/// refused with a clear error, the proxy and the session unharmed.
#[tokio::test]
async fn a_deep_operator_chain_is_refused_not_fatal() {
    let w = world().await;
    let c = connect(&w, "ni_support", "ni_a").await;
    let chain = vec!["1"; 5000].join("+");
    let e = c
        .simple_query(&format!("SELECT id FROM customers WHERE id = {chain}"))
        .await
        .unwrap_err();
    assert!(
        describe_error(&e).contains("cannot analyse"),
        "{}",
        describe_error(&e)
    );
    for op in ["XOR", "NOTNULL"] {
        let chain = vec!["true"; 3000].join(&format!(" {op} "));
        assert!(
            c.simple_query(&format!("SELECT 1 WHERE {chain}"))
                .await
                .is_err()
        );
    }
    let ands = vec!["id = 1"; 3000].join(" AND ");
    assert!(
        c.simple_query(&format!("SELECT 1 WHERE {ands}"))
            .await
            .is_err()
    );
    // Still serving.
    let again = connect(&w, "ni_support", "ni_a").await;
    again
        .simple_query("SELECT id FROM customers WHERE id = 1+1")
        .await
        .unwrap();
    c.simple_query("SELECT 1").await.unwrap();
}

/// What a statement, portal or cursor name means follows the server's
/// answers: a second Parse, PREPARE or DECLARE the server rejects or
/// skips never lends its plan to what the server still holds.
#[tokio::test]
async fn names_mean_what_the_server_holds() {
    let w = world().await;
    let raw = raw_values(&w);
    assert!(raw.len() > 300, "{}", raw.len());
    const U: &str = "select name, phone from customers where id = 1 union all select name, phone from customers where id = 2";
    const DECOY: &str = "select 'a'::text as name, 'b'::text as phone";
    for user in ["ni_analyst", "ni_support"] {
        // A second Parse of a name in use: the server keeps the first.
        let mut c = Wire::connect(&w, user, "ni_a").await;
        c.parse("s1", "copy customers (id, name, phone) to stdout")
            .sync();
        c.answers(1).await;
        c.parse("s1", "copy orders (id, amount) to stdout").sync();
        c.answers(1).await;
        let got = c.bind("", "s1").execute("").sync().answers(1).await;
        assert_hidden("second Parse", &got, &raw);
        assert!(refused(&got), "{}", String::from_utf8_lossy(&got));

        // The same through SQL PREPARE, and a cursor in a savepoint.
        let mut c = Wire::connect(&w, user, "ni_a").await;
        let got = c
            .query(&format!("PREPARE s2 AS {U}"))
            .query(&format!("PREPARE s2 AS {DECOY}"))
            .query("EXECUTE s2")
            .answers(3)
            .await;
        assert_hidden("second PREPARE", &got, &raw);
        let got = c
            .query("BEGIN")
            .query(&format!("DECLARE k CURSOR FOR {U}"))
            .query("SAVEPOINT a")
            .query(&format!("DECLARE k CURSOR FOR {DECOY}"))
            .query("ROLLBACK TO a")
            .query("FETCH ALL FROM k")
            .query("ROLLBACK")
            .answers(7)
            .await;
        assert_hidden("cursor in a savepoint", &got, &raw);

        // SQL names used through the protocol, and the other way round.
        let mut c = Wire::connect(&w, user, "ni_a").await;
        let got = c.query(&format!("PREPARE s3 AS {U}")).answers(1).await;
        assert!(!refused(&got) || user == "ni_support");
        let got = c.bind("", "s3").execute("").sync().answers(1).await;
        assert_hidden("SQL PREPARE through Bind", &got, &raw);
        assert!(refused(&got));
        let got = c
            .query(&format!("BEGIN; DECLARE cur1 CURSOR FOR {U}"))
            .answers(1)
            .await;
        let _ = got;
        let got = c.execute("cur1").sync().answers(1).await;
        assert_hidden("cursor through Execute", &got, &raw);
        assert!(refused(&got));
        c.query("ROLLBACK").answers(1).await;

        // One namespace on the server for SQL and protocol statements,
        // one for cursors and portals: a name dropped through one is
        // dropped for the other.
        let mut c = Wire::connect(&w, user, "ni_a").await;
        c.query(&format!("PREPARE t9 AS {DECOY}")).answers(1).await;
        c.close(b'S', "t9").sync().answers(1).await;
        c.parse("t9", U).sync().answers(1).await;
        let got = c.query("EXECUTE t9").answers(1).await;
        assert_hidden("PREPARE, protocol Close, Parse, EXECUTE", &got, &raw);
        assert!(refused(&got));
        c.parse("t10", DECOY).sync().answers(1).await;
        c.query("DEALLOCATE t10").answers(1).await;
        c.query(&format!("PREPARE t10 AS {U}")).answers(1).await;
        let got = c.bind("", "t10").execute("").sync().answers(1).await;
        assert_hidden("Parse, DEALLOCATE, PREPARE, Bind", &got, &raw);
        assert!(refused(&got));
        c.query(&format!("BEGIN; DECLARE c1 CURSOR FOR {DECOY}"))
            .answers(1)
            .await;
        c.close(b'P', "c1").sync().answers(1).await;
        c.parse("r", U).bind("c1", "r").sync().answers(1).await;
        let got = c.query("FETCH ALL FROM c1").answers(1).await;
        assert_hidden("DECLARE, protocol Close, Bind, FETCH", &got, &raw);
        assert!(refused(&got));
        c.query("ROLLBACK").answers(1).await;
        c.query("BEGIN").answers(1).await;
        c.parse("d", DECOY).bind("c2", "d").sync().answers(1).await;
        c.query("CLOSE c2").answers(1).await;
        c.query(&format!("DECLARE c2 CURSOR FOR {U}"))
            .answers(1)
            .await;
        let got = c.execute("c2").sync().answers(1).await;
        assert_hidden("Bind, CLOSE, DECLARE, Execute", &got, &raw);
        assert!(refused(&got));
        c.query("ROLLBACK").answers(1).await;

        // A Close and a Parse skipped after an error earlier in their
        // block.
        let mut c = Wire::connect(&w, user, "ni_a").await;
        c.parse("s4", U).sync();
        c.answers(1).await;
        c.bind("", "nope")
            .close(b'S', "s4")
            .parse("s4", DECOY)
            .sync();
        c.answers(1).await;
        let got = c.bind("", "s4").execute("").sync().answers(1).await;
        assert_hidden("skipped Parse", &got, &raw);
        assert!(refused(&got));

        // A Parse rejected in an aborted transaction.
        let mut c = Wire::connect(&w, user, "ni_a").await;
        c.query("BEGIN").answers(1).await;
        c.parse("s5", U).sync();
        c.answers(1).await;
        c.query("SELECT 1/0").answers(1).await;
        c.parse("s5", DECOY).sync();
        c.answers(1).await;
        c.query("ROLLBACK").answers(1).await;
        let got = c.bind("", "s5").execute("").sync().answers(1).await;
        assert_hidden("Parse in an aborted transaction", &got, &raw);
        assert!(refused(&got));

        // What drivers do still works: a named statement used later.
        let mut c = Wire::connect(&w, user, "ni_a").await;
        c.parse("ok", "select id from customers where id = 3")
            .sync();
        c.answers(1).await;
        let got = c.bind("", "ok").execute("").sync().answers(1).await;
        assert!(!refused(&got), "{}", String::from_utf8_lossy(&got));
        // One DataRow holding "3".
        assert!(
            got.windows(5).any(|x| x == b"\0\0\0\x013"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    w.proxy.shutdown().await;
}

/// A lookup's candidates are counted whether they are written in the
/// statement or bound as an array parameter.
#[tokio::test]
async fn lookup_arrays_are_counted_when_bound() {
    let w = world().await;
    let c = connect(&w, "ni_support", "ni_a").await;
    let few: Vec<String> = (0..10).map(|i| format!("1317919{i:04}")).collect();
    c.query("SELECT id FROM customers WHERE phone = ANY($1)", &[&few])
        .await
        .unwrap();
    let many: Vec<String> = (0..10_000).map(|i| format!("131{i:04}0001")).collect();
    let e = c
        .query(
            "SELECT count(*) FROM customers WHERE phone = ANY($1) AND id = 1",
            &[&many],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e}");
    // The cap holds for all the lookups of a statement together.
    let sixty: Vec<String> = (0..60).map(|i| format!("131{i:04}0001")).collect();
    let e = c
        .query(
            "SELECT 1 FROM customers WHERE phone = ANY($1) UNION ALL SELECT 2 FROM customers WHERE phone = ANY($2)",
            &[&sixty, &sixty],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e}");
    let list = |from: usize| {
        (from..from + 60)
            .map(|i| format!("'131{i:04}0001'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let e = c
        .simple_query(&format!(
            "SELECT 1 FROM customers WHERE phone IN ({}) UNION ALL SELECT 2 FROM customers WHERE phone IN ({})",
            list(0),
            list(60)
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e}");
    // EXECUTE's arguments are not bound parameters: such a PREPARE is refused.
    let e = c
        .simple_query("PREPARE pp(text[]) AS SELECT id FROM customers WHERE phone = ANY($1)")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e}");
    w.proxy.shutdown().await;
}

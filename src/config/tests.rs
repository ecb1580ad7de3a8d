use super::*;

fn parse(text: &str) -> Result<Config, Error> {
    Config::parse(text, Path::new("/etc/pgwarden/pgwarden.toml"))
}

#[test]
fn minimal_config() {
    let c = parse("listen = \"127.0.0.1:6432\"\nupstream = \"127.0.0.1:5432\"\n").unwrap();
    assert_eq!(c.max_connections, 1000);
    assert_eq!(c.auth.mode, AuthMode::Relay);
    assert_eq!(c.tls.effective_mode(), ClientTlsMode::Disable);
}

#[test]
fn contract_sections_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("audit.key"), "k3y").unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let text = r#"
listen = "127.0.0.1:6432"
upstream = "db.internal:5432"
policies = "policies"

[catalog]
user = "pgwarden"
password = "secret"

[audit]
dir = "audit"
key_file = "audit.key"
durability = "async"

[metrics]
listen = "127.0.0.1:9187"
"#;
    let c = Config::parse(text, &dir.path().join("pgwarden.toml")).unwrap();
    assert_eq!(c.audit.durability, Durability::Async);
    assert_eq!(
        c.policies.as_deref(),
        Some(dir.path().join("policies").as_path())
    );
    assert_eq!(c.upstream_host(), "db.internal");
}

#[test]
fn unknown_key_is_named() {
    let e =
        parse("listen = \"127.0.0.1:1\"\nupstream = \"h:1\"\n[audit]\ndirr = \"x\"\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("dirr"), "{msg}");
    assert!(msg.contains("pgwarden.toml:4"), "{msg}");
}

#[test]
fn bad_values_name_key_and_file() {
    let e = parse("listen = \"nope\"\nupstream = \"h:1\"\n").unwrap_err();
    assert!(e.to_string().contains("key `listen`"), "{e}");
    let e = parse("listen = \"127.0.0.1:1\"\nupstream = \"h\"\n").unwrap_err();
    assert!(e.to_string().contains("key `upstream`"), "{e}");
    let e = parse("listen = \"127.0.0.1:1\"\nupstream = \"h:1\"\n[audit]\ndir = \"/tmp/a\"\nkey_file = \"/nonexistent/k\"\n").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/k"), "{e}");
    let e = parse("listen = \"127.0.0.1:1\"\nupstream = \"h:1\"\n[tls]\nmode = \"require\"\n")
        .unwrap_err();
    assert!(e.to_string().contains("tls.cert"), "{e}");
    let e = parse(
        "listen = \"127.0.0.1:1\"\nupstream = \"h:1\"\n[upstream_tls]\nmode = \"verify-full\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("upstream_tls.ca_file"), "{e}");
    let e = parse("listen = \"127.0.0.1:1\"\nupstream = \"h:1\"\nworkers = 0\n").unwrap_err();
    assert!(e.to_string().contains("key `workers`"), "{e}");
    let c = parse("listen = \"127.0.0.1:1\"\nupstream = \"h:1\"\nworkers = 3\n").unwrap();
    assert_eq!(c.workers, Some(3));
}

#[test]
fn missing_file_names_path() {
    let e = Config::load(Path::new("/nonexistent/pgwarden.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/pgwarden.toml"));
}

#[test]
fn host_port_forms() {
    assert_eq!(split_host_port("[::1]:5432").unwrap(), ("::1".into(), 5432));
    assert!(split_host_port(":5432").is_err());
    assert!(split_host_port("h:0").is_err());
}

#[test]
fn audit_sinks_and_retention_are_checked() {
    let base =
        "listen = \"127.0.0.1:6432\"\nupstream = \"127.0.0.1:5432\"\n[audit]\ndir = \"/tmp/a\"\n";
    let c = parse(&format!(
        "{base}retention_days = 30\n[audit.syslog]\naddress = \"127.0.0.1:514\"\n[audit.http]\nurl = \"http://127.0.0.1:9/in\"\n"
    ))
    .unwrap();
    assert_eq!(c.audit.retention_days, 30.0);
    assert_eq!(c.audit.syslog.unwrap().facility, "local0");
    let bad = |extra: &str, key: &str| {
        let e = parse(&format!("{base}{extra}")).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    };
    bad("retention_days = -1\n", "audit.retention_days");
    bad(
        "[audit.syslog]\naddress = \"127.0.0.1:514\"\nfacility = \"mail2\"\n",
        "audit.syslog.facility",
    );
    bad(
        "[audit.syslog]\naddress = \"nowhere\"\n",
        "audit.syslog.address",
    );
    bad("[audit.http]\nurl = \"ftp://x/y\"\n", "audit.http.url");
    bad(
        "[audit.http]\nurl = \"https://x/y\"\nca_file = \"/nonexistent.pem\"\n",
        "/nonexistent.pem",
    );
}

#[test]
fn the_admin_endpoint_needs_a_real_token() {
    let base = "listen = \"127.0.0.1:6432\"\nupstream = \"127.0.0.1:5432\"\n[admin]\nlisten = \"127.0.0.1:9189\"\n";
    let e = parse(base).unwrap_err().to_string();
    assert!(e.contains("admin.token_file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "abc\n").unwrap();
    let e = parse(&format!("{base}token_file = \"{}\"\n", short.display()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 16"), "{e}");
    let good = dir.path().join("good");
    std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
    let c = parse(&format!("{base}token_file = \"{}\"\n", good.display())).unwrap();
    assert_eq!(c.admin.token().unwrap(), "0123456789abcdef0123");
}

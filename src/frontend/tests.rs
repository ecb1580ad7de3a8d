use super::*;
use crate::codec::context;
use crate::frame::{OwnedFrame, take_frame};
use bytes::BytesMut;

fn frame(raw: &[u8]) -> OwnedFrame {
    let mut buf = BytesMut::from(raw);
    take_frame(&mut buf, true, 1 << 20).unwrap().unwrap()
}

#[test]
fn decodes_query() {
    let f = frame(b"Q\0\0\0\x0dselect 1\0");
    let m = FrontendMessage::decode(&f.frame(), &context()).unwrap();
    assert!(matches!(m, FrontendMessage::Query(q) if &*q == "select 1"));
    // Bytes that are not UTF-8 are replaced, not refused.
    let f = frame(b"Q\0\0\0\x07\xff;\0");
    let m = FrontendMessage::decode(&f.frame(), &context()).unwrap();
    assert!(matches!(m, FrontendMessage::Query(q) if &*q == "\u{fffd};"));
}

#[test]
fn query_without_nul_or_with_trailing_bytes_is_refused() {
    assert!(FrontendMessage::decode(&frame(b"Q\0\0\0\x0cselect 1").frame(), &context()).is_err());
    assert!(
        FrontendMessage::decode(&frame(b"Q\0\0\0\x0eselect 1\0x").frame(), &context()).is_err()
    );
    assert!(FrontendMessage::decode(&frame(b"Q\0\0\0\x04").frame(), &context()).is_err());
    // A NUL inside the string: PostgreSQL refuses what follows it.
    assert!(FrontendMessage::decode(&frame(b"Q\0\0\0\x07a\0b\0").frame(), &context()).is_err());
}

#[test]
fn truncated_bind_is_an_error_not_a_panic() {
    // Bind claiming 5 parameter formats but carrying none.
    let raw = b"B\0\0\0\x08\0\0\0\x05";
    assert!(FrontendMessage::decode(&frame(raw).frame(), &context()).is_err());
    // Parse with a bogus parameter-type count.
    let raw = b"P\0\0\0\x0a\0x\0\x7f\xff\0";
    assert!(FrontendMessage::decode(&frame(raw).frame(), &context()).is_err());
}

#[test]
fn decodes_extended_messages() {
    let mut parse = BytesMut::new();
    pgwire::messages::PgWireFrontendMessage::Parse(Parse::new(
        Some("s1".into()),
        "select $1".into(),
        vec![23],
    ))
    .encode(&mut parse)
    .unwrap();
    match FrontendMessage::decode(&frame(&parse).frame(), &context()).unwrap() {
        FrontendMessage::Parse(p) => {
            assert_eq!(p.name.as_deref(), Some("s1"));
            assert_eq!(p.query, "select $1");
        }
        other => panic!("{other:?}"),
    }
    let f = frame(b"S\0\0\0\x04");
    let sync = FrontendMessage::decode(&f.frame(), &context()).unwrap();
    assert!(matches!(sync, FrontendMessage::Sync));
}

#[test]
fn bodyless_messages_decode_and_refuse_a_body() {
    for (raw, want) in [
        (&b"S\0\0\0\x04"[..], "Sync"),
        (b"H\0\0\0\x04", "Flush"),
        (b"X\0\0\0\x04", "Terminate"),
        (b"c\0\0\0\x04", "CopyDone"),
    ] {
        let f = frame(raw);
        let m = FrontendMessage::decode(&f.frame(), &context()).unwrap();
        assert_eq!(format!("{m:?}"), want);
        let mut with_body = raw.to_vec();
        with_body[4] = 5;
        with_body.push(0);
        assert!(FrontendMessage::decode(&frame(&with_body).frame(), &context()).is_err());
    }
}

#[test]
fn unknown_type_is_refused() {
    assert!(FrontendMessage::decode(&frame(b"z\0\0\0\x04").frame(), &context()).is_err());
}

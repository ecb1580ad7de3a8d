//! Random and mutated frames through the frontend and backend decoders: every
//! one must come back as a value or an error, never a panic that escapes.

use bytes::BytesMut;
use pgwarden::backend;
use pgwarden::codec::context;
use pgwarden::frame::{OwnedFrame, take_frame};
use pgwarden::frontend::FrontendMessage;
use pgwarden::frontend::startup::decode_startup;
use rand::{Rng, SeedableRng};

fn typed(tag: u8, body: &[u8]) -> OwnedFrame {
    let mut raw = vec![tag];
    raw.extend(((body.len() + 4) as i32).to_be_bytes());
    raw.extend_from_slice(body);
    take_frame(&mut BytesMut::from(&raw[..]), true, 1 << 20)
        .unwrap()
        .unwrap()
}

/// A valid Bind, Parse or Execute with a few bytes flipped or cut.
fn mutated(rng: &mut impl Rng) -> OwnedFrame {
    let seeds: [&[u8]; 4] = [
        b"B\0\0\0\x1ap1\0s1\0\0\x01\0\x01\0\x01\0\0\0\x01x\0\0",
        b"P\0\0\0\x16s1\0select $1\0\0\x01\0\0\0\x17",
        b"E\0\0\0\x09p1\0\0\0\0\0",
        b"D\0\0\0\x02\0",
    ];
    let seed = seeds[rng.random_range(0..seeds.len())];
    let mut body = seed[5..].to_vec();
    for _ in 0..rng.random_range(1..4) {
        if body.is_empty() {
            break;
        }
        let i = rng.random_range(0..body.len());
        match rng.random_range(0..3) {
            0 => body[i] = rng.random(),
            1 => body.truncate(i),
            _ => body.insert(i, rng.random()),
        }
    }
    typed(seed[0], &body)
}

#[test]
fn no_input_escapes_as_a_panic() {
    // pgwire panics on some malformed bodies; the codec catches them. Keep
    // the test output readable.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let tags = b"QPBDECSHXdcfFpzRTKZEN";
    let mut errors = 0;
    for _ in 0..50_000 {
        let owned = if rng.random_bool(0.5) {
            mutated(&mut rng)
        } else {
            let len = rng.random_range(0..48);
            let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            typed(tags[rng.random_range(0..tags.len())], &body)
        };
        let frame = owned.frame();
        if FrontendMessage::decode(&frame, &context()).is_err() {
            errors += 1;
        }
        let _ = backend::error_fields(&frame);
        let _ = backend::row_description(&frame);
        let _ = backend::sasl_mechanisms(&frame);
        let _ = backend::data_row_fields(&frame).count();
        let _ = backend::parameter_status(&frame);
        let _ = backend::backend_key(&frame);
        // The same bytes as an untyped startup packet.
        let startup = take_frame(&mut BytesMut::from(&frame.bytes[1..]), false, 1 << 20);
        if let Ok(Some(f)) = startup {
            let _ = decode_startup(&f.frame());
        }
    }
    let _ = std::panic::take_hook();
    // Most random input is malformed, and it is reported as such.
    assert!(errors > 20_000, "{errors}");
}

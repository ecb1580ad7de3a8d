//! Network plumbing shared by both legs: a stream that is plain TCP or TLS,
//! a buffered frame reader for the startup phase, and rustls settings.

pub mod stream;
pub mod tls;

pub use stream::{
    ClientRead, ClientStream, ClientWrite, FramedIo, Stream, UpstreamRead, UpstreamStream,
    UpstreamWrite,
};

//! The relay of an authenticated session: two directions running at once.
//!
//! Client-to-server ([`super::frontend`]) and server-to-client
//! ([`super::backend`]) each read, inspect and forward on their own, so a
//! slow reader on one side never stalls the other beyond what TCP
//! backpressure imposes. The frontend tells the backend, through a queue,
//! which request each coming response answers.

use super::wakes::Wakes;
use super::{Error, SessionInfo, backend, frontend};
use crate::backend::tracker::PendingQueue;
use crate::context::ProxyContext;
use crate::net::{ClientStream, FramedIo, UpstreamStream};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// A Terminate message.
const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

pub async fn run(
    ctx: &Arc<ProxyContext>,
    client: FramedIo<ClientStream>,
    upstream: FramedIo<UpstreamStream>,
    info: Arc<SessionInfo>,
    shutdown: CancellationToken,
    server_key: Option<(i32, bytes::Bytes)>,
) -> Result<(), Error> {
    let FramedIo {
        io: client_io,
        buf: client_buf,
    } = client;
    let FramedIo {
        io: upstream_io,
        buf: upstream_buf,
    } = upstream;
    let (mut client_rd, mut client_wr) = client_io.split();
    let (mut upstream_rd, mut upstream_wr) = upstream_io.split();
    let pending = PendingQueue::default();

    let result = {
        let mut fe = pin!(frontend::run(
            ctx,
            &info,
            &mut client_rd,
            &mut upstream_wr,
            client_buf,
            &pending,
        ));
        let mut be = pin!(backend::run(
            ctx,
            &info,
            &mut upstream_rd,
            &mut client_wr,
            upstream_buf,
            &pending,
            server_key,
        ));
        let mut stop = pin!(shutdown.cancelled());
        // Like `select!`, but a wake-up polls only the branch it was for.
        let wakes = Wakes::<3>::new();
        std::future::poll_fn(|cx| {
            let woken = wakes.take(cx);
            if let Poll::Ready(r) = wakes.poll(woken, 0, fe.as_mut()) {
                return Poll::Ready(r);
            }
            if let Poll::Ready(r) = wakes.poll(woken, 1, be.as_mut()) {
                return Poll::Ready(r);
            }
            if wakes.poll(woken, 2, stop.as_mut()).is_ready() {
                return Poll::Ready(Err(Error::Shutdown));
            }
            Poll::Pending
        })
        .await
    };
    // Both directions have stopped; tell each side what it needs to know.
    if let Err(e) = &result {
        if let Some(m) = e.client_message() {
            let _ = client_wr.write_all(&m.encode()).await;
        }
    }
    let _ = client_wr.shutdown().await;
    let _ = upstream_wr.write_all(&TERMINATE).await;
    let _ = upstream_wr.shutdown().await;
    result
}

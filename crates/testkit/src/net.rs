//! The listening socket, with the "refuse connections for T" fault: the listener is closed (new
//! connections get ECONNREFUSED) and rebound on the same port afterwards; keep-alive connections
//! opened before the refusal fail on their next request, as they would if the server went away.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::faults::Faults;

/// A listener that obeys [`Faults::refuse_connections`].
#[derive(Debug)]
pub(crate) struct FaultyListener {
    listener: Option<TcpListener>,
    addr: SocketAddr,
    faults: Faults,
    refusals: tokio::sync::watch::Receiver<Option<Duration>>,
}

impl FaultyListener {
    pub(crate) fn new(listener: TcpListener, faults: Faults) -> io::Result<FaultyListener> {
        let addr = listener.local_addr()?;
        let mut refusals = faults.refusals();
        refusals.borrow_and_update();
        Ok(FaultyListener {
            listener: Some(listener),
            addr,
            faults,
            refusals,
        })
    }

    async fn refuse_for(&mut self, duration: Duration) {
        self.listener = None;
        tokio::time::sleep(duration).await;
        // The port can be briefly unavailable (TIME_WAIT of our own sockets): retry a little.
        for _ in 0..100 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.listener = Some(listener);
                    return;
                }
                Err(err) => {
                    tracing::debug!(%err, "rebinding the API server port");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        tracing::error!(addr = %self.addr, "could not rebind the API server port");
    }
}

impl axum::serve::Listener for FaultyListener {
    type Io = FaultyStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (FaultyStream, SocketAddr) {
        loop {
            let Some(listener) = &self.listener else {
                self.refuse_for(Duration::ZERO).await;
                continue;
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let _ = stream.set_nodelay(true);
                        let epoch = self.faults.connection_epoch();
                        return (FaultyStream { stream, epoch, faults: self.faults.clone() }, addr);
                    }
                    // Out of file descriptors and the like: back off as axum's own listener does.
                    Err(err) => {
                        tracing::debug!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                changed = self.refusals.changed() => {
                    let refusal = *self.refusals.borrow_and_update();
                    if changed.is_ok() && let Some(duration) = refusal {
                        self.refuse_for(duration).await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// A connection that breaks when connections are refused after it was opened.
#[derive(Debug)]
pub(crate) struct FaultyStream {
    stream: TcpStream,
    epoch: u64,
    faults: Faults,
}

impl FaultyStream {
    fn broken(&self) -> bool {
        self.faults.connection_epoch() != self.epoch
    }
}

fn reset() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "kube-sim refused connections",
    )
}

impl AsyncRead for FaultyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.broken() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyStream {
    // Writes are not failed: the answer to the request that asked for the refusal (the control
    // endpoint) must still go out. Open watches and follow log streams are ended by the fault
    // itself; the next request on this connection fails at read.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

//! How every corral component opens and accepts gRPC connections. Real TCP unless a
//! simulation installs another network (turmoil's) for the whole process before it
//! starts anything; from then on every channel (clients, raft peers, agents, the log
//! proxy) and every listener goes through it. One process-wide switch rather than a
//! parameter threaded through every constructor: the shipped binary never installs one,
//! and a simulated network resolves the calling host itself.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};

/// A byte stream a simulated network hands out.
pub trait SimulatedStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> SimulatedStream for T {}

/// Accepted connections of a simulated listener.
pub type SimulatedIncoming = BoxStream<'static, io::Result<Box<dyn SimulatedStream>>>;

/// A network other than the operating system's.
pub trait Network: Send + Sync + 'static {
    fn connect(
        &self,
        host: String,
        port: u16,
    ) -> BoxFuture<'static, io::Result<Box<dyn SimulatedStream>>>;

    /// Listen on `address` (`ip:port`); returns the bound address and the accepted
    /// connections.
    fn listen(
        &self,
        address: String,
    ) -> BoxFuture<'static, io::Result<(SocketAddr, SimulatedIncoming)>>;
}

static INSTALLED: OnceLock<Arc<dyn Network>> = OnceLock::new();

/// Route every later connection of this process through `network`. Only the first call
/// takes effect; it answers whether this one did.
pub fn install(network: Arc<dyn Network>) -> bool {
    INSTALLED.set(network).is_ok()
}

/// A connection the simulated network made, as hyper wants it.
type SimulatedIo = TokioIo<Box<dyn SimulatedStream>>;

fn connector(
    network: Arc<dyn Network>,
) -> impl tower::Service<
    Uri,
    Response = SimulatedIo,
    Error = io::Error,
    Future = BoxFuture<'static, io::Result<SimulatedIo>>,
> + Clone {
    tower::service_fn(move |uri: Uri| {
        let network = network.clone();
        let connect: BoxFuture<'static, io::Result<SimulatedIo>> = Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other(format!("no host in {uri}")))?
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| io::Error::other(format!("no port in {uri}")))?;
            Ok(TokioIo::new(network.connect(host, port).await?))
        });
        connect
    })
}

/// How long HTTP/2 remembers a stream this side reset, on a simulated network. h2
/// measures it with the wall clock (one second by default): whether a late frame for a
/// cancelled call finds its stream remembered (ignored) or forgotten (answered with a
/// reset) then depended on how fast the machine ran the simulation, and the extra frame
/// shifted every later random draw of the simulated network. Remembered for longer than
/// any simulation runs, streams are forgotten only when more than h2's count bound
/// (50) are held, which depends on the run alone.
const SIMULATED_RESET_STREAM_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

/// `endpoint` as the installed network needs it.
fn simulated_endpoint(endpoint: &Endpoint) -> Endpoint {
    endpoint
        .clone()
        .http2_reset_stream_duration(SIMULATED_RESET_STREAM_MEMORY)
}

/// A channel that connects on first use (and reconnects after a failure).
pub fn lazy_channel(endpoint: &Endpoint) -> Channel {
    match INSTALLED.get() {
        None => endpoint.connect_lazy(),
        Some(network) => {
            simulated_endpoint(endpoint).connect_with_connector_lazy(connector(network.clone()))
        }
    }
}

/// A channel connected now.
pub async fn channel(endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
    match INSTALLED.get() {
        None => endpoint.connect().await,
        Some(network) => {
            simulated_endpoint(endpoint)
                .connect_with_connector(connector(network.clone()))
                .await
        }
    }
}

/// A bound listener: its address and its stream of accepted connections.
pub struct Listener {
    pub local_address: SocketAddr,
    pub incoming: BoxStream<'static, io::Result<Connection>>,
}

/// Bind `address` (`host:port`) on the installed network (TCP with no-delay by default).
pub async fn listen(address: &str) -> io::Result<Listener> {
    match INSTALLED.get() {
        None => {
            let listener = tokio::net::TcpListener::bind(address).await?;
            let local_address = listener.local_addr()?;
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener)
                .map(|accepted| {
                    let stream = accepted?;
                    // Small request/response messages: never wait to coalesce them.
                    stream.set_nodelay(true)?;
                    Ok(Connection::Tcp(stream))
                })
                .boxed();
            Ok(Listener {
                local_address,
                incoming,
            })
        }
        Some(network) => {
            let (local_address, incoming) = network.listen(address.to_string()).await?;
            let incoming = incoming
                .map(|accepted| accepted.map(Connection::Simulated))
                .boxed();
            Ok(Listener {
                local_address,
                incoming,
            })
        }
    }
}

/// One accepted connection, real or simulated.
pub enum Connection {
    Tcp(tokio::net::TcpStream),
    Simulated(Box<dyn SimulatedStream>),
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Connection::Tcp(stream) => stream.connect_info(),
            Connection::Simulated(_) => TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(stream) => Pin::new(stream).poll_read(context, buffer),
            Connection::Simulated(stream) => Pin::new(stream).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Tcp(stream) => Pin::new(stream).poll_write(context, bytes),
            Connection::Simulated(stream) => Pin::new(stream).poll_write(context, bytes),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(stream) => Pin::new(stream).poll_flush(context),
            Connection::Simulated(stream) => Pin::new(stream).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(stream) => Pin::new(stream).poll_shutdown(context),
            Connection::Simulated(stream) => Pin::new(stream).poll_shutdown(context),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Tcp(stream) => Pin::new(stream).poll_write_vectored(context, buffers),
            Connection::Simulated(stream) => Pin::new(stream).poll_write_vectored(context, buffers),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Tcp(stream) => stream.is_write_vectored(),
            Connection::Simulated(stream) => stream.is_write_vectored(),
        }
    }
}

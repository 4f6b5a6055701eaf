//! turmoil's simulated TCP as corral's network: installed once per process, it carries
//! every gRPC channel and listener of every simulated host.

use corral_wire::network::{Network, SimulatedIncoming, SimulatedStream};
use futures::future::BoxFuture;
use futures::StreamExt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

pub struct TurmoilNetwork;

impl Network for TurmoilNetwork {
    fn connect(
        &self,
        host: String,
        port: u16,
    ) -> BoxFuture<'static, io::Result<Box<dyn SimulatedStream>>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(Box::new(stream) as Box<dyn SimulatedStream>)
        })
    }

    fn listen(
        &self,
        address: String,
    ) -> BoxFuture<'static, io::Result<(SocketAddr, SimulatedIncoming)>> {
        Box::pin(async move {
            let address: SocketAddr = address.parse().map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("simulated listen address {address}: {error}"),
                )
            })?;
            let listener = turmoil::net::TcpListener::bind(address).await?;
            let local_address = listener.local_addr()?;
            let incoming = futures::stream::unfold(listener, |listener| async move {
                let accepted = listener
                    .accept()
                    .await
                    .map(|(stream, _)| Box::new(stream) as Box<dyn SimulatedStream>);
                Some((accepted, listener))
            })
            .boxed();
            Ok((local_address, incoming))
        })
    }
}

/// Install turmoil's network for this process (idempotent).
pub fn install() {
    let _ = corral_wire::network::install(Arc::new(TurmoilNetwork));
}

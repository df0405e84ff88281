//! A local Azure for drsync: Entra ID tokens, ARM API Management (services, child entities,
//! backup and restore as long-running operations), storage through drsync's own `BlobStore`,
//! throttling and injected faults, on one loopback port.
//!
//! # Layout
//! - [`config`]: [`EmulatorConfig`] and the seed types.
//! - `model`: services, configuration, operations, the request log and state dumps; ARM JSON rendering.
//! - [`envelope`]: the documented backup blob format.
//! - `throttle`: ARM's token buckets.
//! - `server`: the HTTP front: routing and the ARM pipeline (authentication, api-versions,
//!   regions, throttling); `server::entra` (tokens), `server::services` (services, child
//!   entities, syncState), `server::operations` (backup/restore POSTs and polling).
//! - `ops`: long-running operations: durations, storage checks, completion.
//! - `control`: the `/_emulator/...` control API.
//! - `state`: the shared state and [`EmulatorState`], the in-process handle.
//!
//! What it does not do: TLS (loopback HTTP only), real role assignments (grants are
//! configuration), any APIM data plane. `docs/emulator.md` describes every behaviour.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use drsync_emulator::{Emulator, EmulatorConfig, ServiceSeed};
//! let emu = Emulator::start(EmulatorConfig::default()).await?;
//! emu.state().add_service(ServiceSeed::new("00000000-0000-0000-0000-000000000001", "rg", "apim-weu", "westeurope"))?;
//! let token = emu.mint_token(std::time::Duration::from_secs(3600));
//! println!("{} {}", emu.base_url(), token.expires_on);
//! emu.shutdown().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use drsync_core::{Clock, SystemClock};

pub mod config;
mod control;
pub mod envelope;
pub mod model;
mod ops;
mod server;
mod state;
mod throttle;

pub use config::{
    AppRegistration, DurationConfig, EmulatorConfig, FaultConfig, Seed, ServiceSeed, StaticToken,
    StorageAccountConfig, StorageBackend, ThrottleConfig, UserAssignedIdentity,
};
pub use model::{Configuration, RequestRecord, StateDump};
pub use server::SUPPORTED_API_VERSIONS;
pub use state::{EmulatorState, MintedToken};

/// What can go wrong setting up or driving the emulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is not usable.
    #[error("invalid emulator configuration: {0}")]
    Config(String),
    /// A seed, state dump or in-process request is not valid.
    #[error("{0}")]
    Seed(String),
    /// Binding or serving failed.
    #[error("emulator I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How often the background ticker completes due operations (real time).
const TICK: std::time::Duration = std::time::Duration::from_millis(20);

fn router(app: Arc<state::App>) -> axum::Router {
    axum::Router::new().fallback(handle_durably).with_state(app)
}

/// Answers a request; with a `state_file`, a request that may have changed the state is
/// persisted before its answer leaves, as Azure's answer means the change is durable.
async fn handle_durably(
    axum::extract::State(app): axum::extract::State<Arc<state::App>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let may_change = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let response = server::handle(axum::extract::State(app.clone()), req).await;
    if may_change {
        app.persist();
    }
    response
}

async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<state::App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let ticker_app = app.clone();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = interval.tick() => ops::settle(&ticker_app).await,
                _ = stop_rx.changed() => break,
            }
        }
    });
    let served = axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    let _ = ticker.await;
    served.map_err(Error::Io)
}

/// Serves the emulator on `listener` (bind `127.0.0.1:0` in tests) until `shutdown` completes,
/// with the system clock.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: EmulatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Arc::new(state::App::new(config, Arc::new(SystemClock))?);
    serve(listener, app, shutdown).await?;
    Ok(())
}

/// A running emulator, started in-process by [`Emulator::start`].
#[derive(Debug)]
pub struct Emulator {
    state: EmulatorState,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Emulator {
    /// Binds `127.0.0.1:0` and serves `config` with the system clock.
    pub async fn start(config: EmulatorConfig) -> Result<Self> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Binds `127.0.0.1:0` and serves `config` with the given clock (the emulator clock is this
    /// clock plus the offset the control API advances).
    pub async fn start_with_clock(config: EmulatorConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::start_on(listener, config, clock)
    }

    /// Serves on an already bound listener.
    pub fn start_on(
        listener: tokio::net::TcpListener,
        config: EmulatorConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let addr = listener.local_addr()?;
        let app = Arc::new(state::App::new(config, clock)?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app.clone(), async move {
            let _ = rx.await;
        }));
        Ok(Self {
            state: EmulatorState { app },
            addr,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the ARM endpoint and the authority host.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The in-process handle to the state.
    pub fn state(&self) -> &EmulatorState {
        &self.state
    }

    /// The structured request log.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.state.request_log()
    }

    /// Mints an ARM bearer token valid for `lifetime` (emulator clock).
    pub fn mint_token(&self, lifetime: std::time::Duration) -> MintedToken {
        self.state.mint_token(lifetime)
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop_and_join().await
    }

    async fn stop_and_join(&mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))?,
            None => Ok(()),
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

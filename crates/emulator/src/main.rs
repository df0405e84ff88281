//! `drsync-emulator`: serves the emulator on 127.0.0.1 until Ctrl-C.
//!
//! Prints `listening on http://127.0.0.1:PORT` once ready (port 0 picks a free one).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use drsync_emulator::{EmulatorConfig, FaultConfig, Seed, StateDump};

/// A local Azure for drsync: Entra ID, ARM API Management (backup/restore), storage, throttling
/// and faults.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Emulator configuration (JSON, the `EmulatorConfig` fields; see docs/emulator.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Initial state: a state dump (`GET /_emulator/state`) or a seed document (`{"services": [...]}`).
    #[arg(long)]
    seed_state: Option<PathBuf>,
    /// Multiplies operation durations (overrides the configuration's `time_scale`).
    #[arg(long)]
    time_scale: Option<f64>,
    /// Faults to inject (JSON, the `FaultConfig` fields).
    #[arg(long)]
    fault_profile: Option<PathBuf>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &PathBuf, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} `{}`", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{what} `{}` is not valid", path.display()))
}

async fn main_inner(args: Args) -> anyhow::Result<()> {
    let mut config: EmulatorConfig = match &args.config {
        Some(p) => read_json(p, "configuration")?,
        None => EmulatorConfig::default(),
    };
    if let Some(scale) = args.time_scale {
        config.time_scale = scale;
    }
    if let Some(p) = &args.fault_profile {
        config.faults = read_json::<FaultConfig>(p, "fault profile")?;
    }
    let mut dump: Option<StateDump> = None;
    if let Some(p) = &args.seed_state {
        let value: serde_json::Value = read_json(p, "seed state")?;
        if value.get("format").is_some() {
            dump = Some(
                serde_json::from_value(value)
                    .with_context(|| format!("state dump `{}` is not valid", p.display()))?,
            );
        } else {
            let seed: Seed = serde_json::from_value(value)
                .with_context(|| format!("seed `{}` is not valid", p.display()))?;
            config.services.extend(seed.services);
        }
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let addr = listener.local_addr()?;
    let emu = drsync_emulator::Emulator::start_on(
        listener,
        config,
        std::sync::Arc::new(drsync_core::SystemClock),
    )?;
    if let Some(dump) = dump {
        emu.state().load_state(dump)?;
    }
    println!("listening on http://{addr}");
    stop_signal().await?;
    emu.shutdown().await?;
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot wait for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot wait for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DRSYNC_EMULATOR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match main_inner(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drsync-emulator: {e:#}");
            ExitCode::from(2)
        }
    }
}

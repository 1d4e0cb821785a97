//! `arqonbus-sidecar --config /etc/arqonbus-sidecar/sidecar.toml`

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use arqonbus_sidecar::config::{Config, DEFAULT_TOML};
use arqonbus_sidecar::metrics::Metrics;
use arqonbus_sidecar::sessions::{BusTarget, Sessions};
use arqonbus_sidecar::southbound::Route;
use arqonbus_sidecar::{grpc, http, serve, App};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// HTTP and gRPC onto ArqonBus and back.
#[derive(Parser, Debug)]
#[command(name = "arqonbus-sidecar", version)]
struct Cli {
    /// The TOML configuration; what it leaves out keeps the embedded defaults.
    #[arg(long, env = "ARQONBUS_SIDECAR_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{DEFAULT_TOML}");
        return Ok(());
    }
    let config = match &cli.config {
        Some(path) => Config::load(path),
        None => Config::defaults(),
    }
    .context("configuration refused")?;
    if cli.check {
        println!("configuration ok");
        return Ok(());
    }
    init_logs(&config);
    arqonbus_sidecar::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sidecar")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(run(config))
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let target = BusTarget::from_config(&config.bus, config.sessions.stream_buffer)
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let tls = match (&config.tls.cert_path, &config.tls.key_path) {
        (Some(cert), Some(key)) => Some(serve::tls_acceptor(cert, key)?),
        _ => None,
    };
    let sessions = Sessions::new(target.clone(), config.sessions.clone(), metrics.clone());
    let app = Arc::new(App {
        config: config.clone(),
        sessions: sessions.clone(),
        metrics: metrics.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // Bind everything before saying ready: a listener that cannot bind stops the start.
    let mut bound = Vec::new();
    if let Some(addr) = config.http_listen()? {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("http.listen {addr}: cannot bind"))?;
        bound.push(("http", listener, http::router(app.clone())));
    }
    if let Some(addr) = config.grpc_listen()? {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("grpc.listen {addr}: cannot bind"))?;
        bound.push(("grpc", listener, grpc::router(app.clone())));
    }
    let scheme = if tls.is_some() { "tls" } else { "plain" };
    for (name, listener, router) in bound {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, listener = name, %scheme, "listening");
        // A line on stdout per listener, for scripts and tests (ports may be chosen by the OS).
        println!("arqonbus-sidecar: {name} listening on {addr} ({scheme})");
        tasks.push(tokio::spawn(serve::serve(
            listener,
            router,
            tls.clone(),
            stop_rx.clone(),
        )));
    }
    let _ = std::io::stdout().flush();

    tokio::spawn(sessions.clone().expire_idle());
    for route in &config.routes {
        let route = Route::new(
            route.clone(),
            target.clone(),
            &config.bus.token,
            metrics.clone(),
            config.bus.max_frame_bytes as usize,
        )
        .with_context(|| format!("route {}: cannot build its HTTP client", route.name))?;
        tasks.push(tokio::spawn(Arc::new(route).run(stop_rx.clone())));
    }

    wait_for_signal().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

//! The `arqonbus` binary: `serve` runs the bus; the other subcommands are clients and tools.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use arqonbus::config::{Config, LogFormat, DEFAULT_TOML};
use arqonbus::Server;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "arqonbus",
    version,
    about = "ArqonBus: a thread-per-core message bus for pulses"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bus (embedded defaults unless --config says otherwise).
    Serve(ServeArgs),
    /// Publish pulses.
    Pub(arqonbus::cli::PubArgs),
    /// Follow a reality and print its pulses.
    Sub(arqonbus::cli::SubArgs),
    /// Read a bounded range of a retained reality.
    History(arqonbus::cli::HistoryArgs),
    /// Print the default configuration, with comments.
    Config,
    /// Check or print the audit log.
    Audit(arqonbus::cli::audit::AuditArgs),
    /// Load or unload CASIL policies (needs a controller token).
    Policy(arqonbus::cli::policy::PolicyArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file; keys it leaves out keep their defaults.
    #[arg(long, env = "ARQONBUS_CONFIG")]
    config: Option<PathBuf>,
    /// Client listener (overrides `listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Number of shards (overrides `shards`; 0 = one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Data directory (overrides `data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Admin HTTP listener (overrides `admin_listen`).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Pub(args) => arqonbus::cli::publish(args),
        Command::Sub(args) => arqonbus::cli::subscribe(args),
        Command::Audit(args) => arqonbus::cli::audit::run(args),
        Command::Policy(args) => arqonbus::cli::policy::run(args),
        Command::History(args) => arqonbus::cli::history(args),
        Command::Config => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arqonbus: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if args.admin_listen.is_some() {
        config.admin_listen = args.admin_listen;
    }
    init_logging(&config);

    let server = Server::start(config).context("cannot start the server")?;
    let stop = server.stop_flag();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot install signal handlers")?;
    }
    server.join().context("server stopped with an error")?;
    tracing::info!("arqonbus stopped");
    Ok(())
}

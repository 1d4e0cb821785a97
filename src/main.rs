//! The `arqonbus` binary: `serve` runs the bus; the other subcommands are clients and tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use arqonbus::config::{parse_admin_listen, Config, LogFormat, DEFAULT_TOML};
use arqonbus::{service, tune, Server};
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
    /// Who is present in a reality (sessions subscribed there).
    Presence(arqonbus::cli::PresenceArgs),
    /// Make signing keys and issue tokens.
    #[command(subcommand)]
    Token(arqonbus::cli::token::TokenCommand),
    /// Print the default configuration, with comments, or check a configuration file.
    Config(ConfigArgs),
    /// Check the kernel settings a bus host needs, or apply them.
    Tune(TuneArgs),
    /// Check or print the audit log.
    Audit(arqonbus::cli::audit::AuditArgs),
    /// Load or unload CASIL policies (needs a controller token).
    Policy(arqonbus::cli::policy::PolicyArgs),
    /// Load, unload or tune hosted Wasm operators (needs a controller token).
    Operator(arqonbus::cli::operator::OperatorArgs),
    /// Set or read a reality's parameters (setting needs a controller token).
    Param(arqonbus::cli::param::ParamArgs),
    /// Type-check, apply, remove and watch typed circuits of operators.
    Circuit(arqonbus::cli::circuit::CircuitArgs),
    /// Replay a retained reality through the configured operators (offline): reproduce it bit
    /// for bit, or fork it with other parameters.
    Replay(arqonbus::cli::replay::ReplayArgs),
    /// Compare two logs: where they diverge, field by field, and a plot of one field.
    Diff(arqonbus::cli::replay::DiffArgs),
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// Check this file (parse and validate every bound) instead of printing the default.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["check", "apply"])))]
struct TuneArgs {
    /// Compare the running kernel with the recommendations; exit 1 if a required one is off.
    #[arg(long)]
    check: bool,
    /// Write the recommendations to the running kernel (root only; asks first).
    #[arg(long)]
    apply: bool,
    /// With --apply: do not ask for confirmation.
    #[arg(long, requires = "apply")]
    yes: bool,
    /// Root of the file system to read /proc/sys from (tests use a fake tree).
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

/// `--admin-listen`: an address, a bare port (loopback), or `off`.
#[derive(Debug, Clone, Copy)]
struct AdminListen(Option<SocketAddr>);

impl std::str::FromStr for AdminListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_admin_listen(s).map(AdminListen)
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file; keys it leaves out keep their defaults.
    #[arg(long, env = "ARQONBUS_CONFIG")]
    config: Option<PathBuf>,
    /// Client listener, plain TCP (overrides `listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TLS listener (overrides `tls_listen`; needs [tls] in the config).
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// WebSocket listener (overrides `ws_listen`).
    #[arg(long)]
    ws_listen: Option<SocketAddr>,
    /// Secure WebSocket listener (overrides `wss_listen`; needs [tls]).
    #[arg(long)]
    wss_listen: Option<SocketAddr>,
    /// Number of shards (overrides `shards`; 0 = one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Data directory (overrides `data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Admin HTTP listener for /metrics, /healthz, /readyz (overrides `admin_listen`): an
    /// address, a bare port (loopback), or `off`.
    #[arg(long, value_name = "ADDR|PORT|off")]
    admin_listen: Option<AdminListen>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Pub(args) => arqonbus::cli::publish(args),
        Command::Sub(args) => arqonbus::cli::subscribe(args),
        Command::Audit(args) => arqonbus::cli::audit::run(args),
        Command::Policy(args) => arqonbus::cli::policy::run(args),
        Command::Operator(args) => arqonbus::cli::operator::run(args),
        Command::Param(args) => arqonbus::cli::param::run(args),
        Command::Circuit(args) => arqonbus::cli::circuit::run(args),
        Command::Replay(args) => arqonbus::cli::replay::run_replay(args),
        Command::Diff(args) => arqonbus::cli::replay::run_diff(args),
        Command::History(args) => arqonbus::cli::history(args),
        Command::Presence(args) => arqonbus::cli::presence(args),
        Command::Token(command) => arqonbus::cli::token::run(command),
        Command::Config(args) => config(args),
        Command::Tune(args) => return tune_command(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arqonbus: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn config(args: ConfigArgs) -> anyhow::Result<()> {
    match args.check {
        None => print!("{DEFAULT_TOML}"),
        Some(path) => {
            Config::from_file(&path)?.validate()?;
            println!("{}: valid", path.display());
        }
    }
    Ok(())
}

fn tune_command(args: TuneArgs) -> std::process::ExitCode {
    let mut out = std::io::stdout().lock();
    let result = if args.check {
        tune::run_check(&args.root, &mut out).map_err(anyhow::Error::from)
    } else {
        let mut input = std::io::stdin().lock();
        tune::run_apply(
            &args.root,
            args.yes,
            &mut input,
            tune::stdin_is_tty(),
            &mut out,
        )
        .map_err(anyhow::Error::from)
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("arqonbus: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colors only on a terminal: under systemd, stderr goes to the journal, where escape codes
    // would garble every line.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    if args.tls_listen.is_some() {
        config.tls_listen = args.tls_listen;
    }
    if args.ws_listen.is_some() {
        config.ws_listen = args.ws_listen;
    }
    if args.wss_listen.is_some() {
        config.wss_listen = args.wss_listen;
    }
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(AdminListen(admin)) = args.admin_listen {
        config.admin_listen = admin;
    }
    init_logging(&config);

    // Catch SIGTERM/SIGINT before start-up binds anything: a signal that arrives while shards
    // start (or recover) is remembered and stops the server as soon as it runs, rather than
    // killing the process half-started.
    let early_stop = Arc::new(AtomicBool::new(false));
    let signals = [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT];
    for signal in signals {
        signal_hook::flag::register(signal, early_stop.clone())
            .context("cannot install signal handlers")?;
    }
    let server = Server::start(config).context("cannot start the server")?;
    let stop = server.stop_flag();
    for signal in signals {
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot install signal handlers")?;
    }
    // SIGHUP re-reads the TLS certificates (connections stay up) and the revocation list
    // (sessions it now revokes are closed).
    signal_hook::flag::register(signal_hook::consts::SIGHUP, server.reload_flag())
        .context("cannot install the SIGHUP handler")?;
    if early_stop.load(Ordering::Acquire) {
        server.shutdown();
    }
    // Every listener is bound and every shard accepts: tell systemd (a no-op outside it), then
    // ping its watchdog while every shard turns, and say STOPPING when a signal arrives.
    let status = server.status();
    service::notify_ready(&status);
    let supervisor = service::spawn_supervisor(status);
    server.join().context("server stopped with an error")?;
    if let Some(supervisor) = supervisor {
        let _ = supervisor.join();
    }
    tracing::info!("arqonbus stopped");
    Ok(())
}

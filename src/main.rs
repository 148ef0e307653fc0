//! The `segmentd` binary: parses the command line, sets up logging, and
//! hands over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use segmentd::cli::{Cli, Command, LogFormat, ServeArgs};
use tracing_subscriber::EnvFilter;

// sled allocates and frees a node's entries on every split and merge;
// glibc's allocator spent a quarter of an import in malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match &cli.command {
        Command::Serve(args) if args.log_format == LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        _ => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }

    // A panic (sled can panic on a damaged directory) is logged as one line;
    // where it is caught, the caller reports it as an error.
    std::panic::set_hook(Box::new(|panic| {
        tracing::error!(panic = %panic, "panic");
    }));

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("segmentd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Import(args) => segmentd::import::run(args).await.map_err(|e| e.to_string()),
            Command::Load(args) => segmentd::load::run(args).await,
            Command::Admin(command) => segmentd::client::admin(command).await,
            Command::Watch(args) => segmentd::client::watch(args).await,
            Command::Health(args) => match segmentd::client::health(args).await {
                Ok(true) => Ok(()),
                Ok(false) => Err("not serving".to_owned()),
                Err(error) => Err(error),
            },
            Command::Generate(args) => {
                tokio::task::spawn_blocking(move || segmentd::generate::run(args))
                    .await
                    .map_err(|error| error.to_string())?
            }
        }
    });
    // Storage is flushed by now; an evaluation still running on a blocking
    // thread holds nothing that needs it, so exit without waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("segmentd: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let shutdown = segmentd::server::shutdown_signal()
        .map_err(|error| format!("cannot listen for signals: {error}"))?;
    segmentd::server::check_listen_address(&args.listen, args.admin_key.is_some())
        .map_err(|e| e.to_string())?;
    let read = |path: &std::path::Path, flag: &str| {
        std::fs::read(path).map_err(|error| format!("{flag} {}: {error}", path.display()))
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((read(cert, "--tls-cert")?, read(key, "--tls-key")?)),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let metrics =
        match args.metrics_listen.as_deref() {
            Some("off") => None,
            Some(address) => Some(tokio::net::TcpListener::bind(address).await.map_err(
                |error| {
                    format!(
                        "--metrics-listen: cannot listen on {address}: {error} (`off` serves no \
                         metrics)"
                    )
                },
            )?),
            None => {
                let address = segmentd::cli::DEFAULT_METRICS_LISTEN;
                match tokio::net::TcpListener::bind(address).await {
                    Ok(listener) => Some(listener),
                    Err(error) => {
                        tracing::warn!(
                            %error,
                            address,
                            "serving no metrics: the default metrics port is taken (set \
                             --metrics-listen)"
                        );
                        None
                    }
                }
            }
        };
    let options = segmentd::server::ServeOptions {
        store: segmentd::store::StoreOptions {
            checkpoint_bytes: args.checkpoint_bytes,
            cache_bytes: args.cache_mib << 20,
        },
        admin_key: args.admin_key.map(|key| key.expose().to_owned()),
        tls,
        metrics,
        drain: std::time::Duration::from_secs_f64(args.drain_seconds),
        max_concurrent_calls: args.max_concurrent_calls as usize,
        max_calls_per_tenant: args.max_calls_per_tenant as usize,
        watch_tick: std::time::Duration::from_secs_f64(args.watch_tick_seconds),
        watch_retention: std::time::Duration::from_secs(args.watch_retention_seconds),
        editor: !args.no_editor,
        cors_origins: args.cors_origins,
    };
    segmentd::server::serve_configured(listener, &args.data, options, shutdown)
        .await
        .map_err(|e| e.to_string())
}

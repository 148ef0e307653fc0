//! The `segmentd` binary: parses the command line, sets up logging, and
//! hands over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use segmentd::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

// sled allocates and frees a node's entries on every split and merge;
// glibc's allocator spent a quarter of an import in malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

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
            Command::Serve(args) => {
                let shutdown = segmentd::server::shutdown_signal()
                    .map_err(|error| format!("cannot listen for signals: {error}"))?;
                segmentd::server::check_listen_address(&args.listen).map_err(|e| e.to_string())?;
                let listener = tokio::net::TcpListener::bind(args.listen)
                    .await
                    .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
                let options = segmentd::store::StoreOptions {
                    checkpoint_bytes: args.checkpoint_bytes,
                    cache_bytes: args.cache_mib << 20,
                };
                segmentd::server::serve_with(listener, &args.data, options, shutdown)
                    .await
                    .map_err(|e| e.to_string())
            }
            Command::Import(args) => segmentd::import::run(args).await.map_err(|e| e.to_string()),
            Command::Load(args) => segmentd::load::run(args).await,
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

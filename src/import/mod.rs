//! `segmentd import`: bulk-loads a file into a tenant through a running
//! server. The importer is a gRPC client like any other.

pub mod cdnow;

use std::path::PathBuf;
use std::time::Instant;

use tonic::transport::{Channel, Endpoint};

use crate::cli::{ImportArgs, ImportFormat};
use crate::proto::segment_service_client::SegmentServiceClient;

/// What can stop an import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Format {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("cannot reach the server at {server}: {message}")]
    Connect { server: String, message: String },
    #[error("`{0}` is not a server address: give host:port or an http:// URL")]
    BadServer(String),
    #[error("the server refused a call: {}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
}

/// An error and its sources, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Connects to a server given as `host:port` or a URL.
pub async fn connect(server: &str) -> Result<SegmentServiceClient<Channel>, ImportError> {
    let url = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    let failed = |message: String| ImportError::Connect {
        server: server.to_owned(),
        message,
    };
    let endpoint =
        Endpoint::from_shared(url).map_err(|_| ImportError::BadServer(server.to_owned()))?;
    let channel = endpoint.connect().await.map_err(|error| {
        failed(format!(
            "{}; is `segmentd serve` running there?",
            error_chain(&error)
        ))
    })?;
    Ok(SegmentServiceClient::new(channel)
        .max_decoding_message_size(crate::server::MAX_MESSAGE_BYTES))
}

/// Runs an import as the command line asked.
pub async fn run(args: ImportArgs) -> Result<(), ImportError> {
    let started = Instant::now();
    let file = std::fs::File::open(&args.path).map_err(|source| ImportError::Io {
        path: args.path.clone(),
        source,
    })?;
    let mut client = connect(&args.server).await?;
    let summary = match args.format {
        ImportFormat::Cdnow => {
            let batch_size = args.batch_size as usize;
            cdnow::import(&mut client, &args.tenant, &args.path, file, batch_size).await?
        }
    };
    println!(
        "imported {} lines ({} customers) into tenant `{}` in {:.1} s: {} events recorded, {} already present",
        summary.lines,
        summary.customers,
        args.tenant,
        started.elapsed().as_secs_f64(),
        summary.recorded,
        summary.duplicates,
    );
    Ok(())
}

/// What an import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    pub lines: u64,
    pub customers: u64,
    pub recorded: u64,
    pub duplicates: u64,
}

/// Prints a progress line at most every two seconds, and at the end.
pub struct Progress {
    started: Instant,
    last: Instant,
    total_bytes: u64,
}

impl Progress {
    pub fn new(total_bytes: u64) -> Self {
        let now = Instant::now();
        Progress {
            started: now,
            last: now,
            total_bytes,
        }
    }

    /// Reports `lines` done after reading `bytes` of the file.
    pub fn update(&mut self, lines: u64, bytes: u64, done: bool) {
        if !done && self.last.elapsed().as_secs_f64() < 2.0 {
            return;
        }
        self.last = Instant::now();
        let seconds = self.started.elapsed().as_secs_f64().max(1e-6);
        let rate = lines as f64 / seconds;
        let fraction = if self.total_bytes == 0 {
            1.0
        } else {
            bytes as f64 / self.total_bytes as f64
        };
        let remaining = if fraction > 0.0 {
            seconds * (1.0 - fraction) / fraction
        } else {
            0.0
        };
        eprintln!(
            "{:5.1}%  {lines} lines  {rate:.0} lines/s  about {remaining:.0} s left",
            fraction * 100.0
        );
    }
}

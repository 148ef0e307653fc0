//! The command line: `segmentd serve` and `segmentd import`, every flag with
//! an environment twin (API.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Where `serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Where `serve` keeps its data unless told otherwise, under the working directory.
pub const DEFAULT_DATA: &str = "segmentd-data";
/// The server that client commands call unless told otherwise.
pub const DEFAULT_SERVER: &str = "127.0.0.1:50051";
/// Rows per call of an import. Every call is flushed to disk before it is
/// answered, so a bulk load gains from big calls: 5,000 events a call import
/// about twice as fast as 1,000 (BENCHMARKS.md), in messages well under
/// the 4 MiB a server decodes.
pub const DEFAULT_BATCH_SIZE: u32 = 5_000;

/// Customer segments as roaring-bitmap set algebra, served over gRPC.
#[derive(Debug, Parser)]
#[command(name = "segmentd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service.
    Serve(ServeArgs),
    /// Bulk-load a file into a tenant through a running server.
    Import(ImportArgs),
    /// Drive a running server with counts or pages for a while and report
    /// throughput and latency percentiles.
    Load(LoadArgs),
    /// Manage tenants and API keys on a server that has keys on (needs
    /// the admin key, as --api-key or SEGMENTD_API_KEY).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Ask a server's health service whether it is serving: exit 0 if it
    /// is, 1 if not (for container health checks).
    Health(HealthArgs),
    /// Follow saved segments and print who enters and leaves them, a line
    /// per change, until interrupted.
    Watch(WatchArgs),
    /// Write a synthetic merchant tenant (10M customers at scale 1, fixed
    /// seed): as events-jsonl and CSV files, or straight into a data directory.
    Generate(GenerateArgs),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a tenant.
    CreateTenant {
        #[command(flatten)]
        client: crate::client::ClientArgs,
        #[arg(long)]
        tenant: String,
        /// Its IANA time zone (default UTC).
        #[arg(long, default_value = "")]
        time_zone: String,
    },
    /// Issue an API key for a tenant; prints the key, which is shown once.
    CreateKey {
        #[command(flatten)]
        client: crate::client::ClientArgs,
        #[arg(long)]
        tenant: String,
        /// A note on whom the key is for.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List the keys of a tenant (or of every tenant), revoked ones too.
    ListKeys {
        #[command(flatten)]
        client: crate::client::ClientArgs,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key at once.
    RevokeKey {
        #[command(flatten)]
        client: crate::client::ClientArgs,
        /// The key id (the 16 hex digits after `sgd_`).
        #[arg(long)]
        key_id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
    /// The service to ask about; empty for the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
    #[arg(long, env = "SEGMENTD_TENANT")]
    pub tenant: String,
    /// A segment to follow; repeat for more (at most 100).
    #[arg(long = "segment", required = true)]
    pub segments: Vec<String>,
    /// Resume after this sequence number (the last one processed); left
    /// out, the current members come first.
    #[arg(long)]
    pub after: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
    /// The tenant whose audiences are asked for.
    #[arg(long, env = "SEGMENTD_TENANT")]
    pub tenant: String,
    /// A rule to ask for; give several to go round them.
    #[arg(long = "rule", required_unless_present = "record_events")]
    pub rules: Vec<String>,
    /// Write instead of read: each call is a `RecordEvents` of this many
    /// new events (orders, messages, clicks over the last 90 days).
    #[arg(long, conflicts_with_all = ["rules", "resolve", "as_of"],
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub record_events: Option<u32>,
    /// With --record-events: each of the calls in flight writes its own
    /// tenant (`TENANT-0`, `TENANT-1`, ...) instead of all writing `--tenant`.
    #[arg(long, requires = "record_events")]
    pub tenant_per_client: bool,
    /// With --record-events: the customers the events go to.
    #[arg(long, default_value_t = 100_000, requires = "record_events",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub customers: u32,
    /// With --record-events: also measure the change feed's delay. Two
    /// segments are saved in the (first) tenant, one the load keeps moving
    /// (`ordered WITHIN 30d AND NOT messaged WITHIN 7d`) and one a probe
    /// follows; every 50 ms the probe upserts a new customer into it and
    /// times how long after the write's acknowledgement the watch tells it.
    #[arg(long, requires = "record_events")]
    pub watch_delay: bool,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub seconds: u64,
    /// Ask for the first page of 1,000 ids (ResolveSegment) instead of counts.
    #[arg(long)]
    pub resolve: bool,
    /// The evaluation instant (RFC 3339), for data from the past.
    #[arg(long)]
    pub as_of: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The tenant's size against the full one of 10,000,000 customers and
    /// about 30,000,000 events (0.01 gives 100,000 customers).
    #[arg(long, default_value_t = 1.0, value_parser = parse_scale)]
    pub scale: f64,
    /// Customers, instead of --scale (events grow with them).
    #[arg(long, conflicts_with = "scale", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub customers: Option<u64>,
    /// The seed: the same seed and size give the same tenant.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write `tenant.jsonl` (events-jsonl, for `segmentd import`) and the
    /// CSV tables for SQL engines into this directory.
    #[arg(long, required_unless_present = "data", conflicts_with = "data")]
    pub out: Option<std::path::PathBuf>,
    /// With --out: which files to write.
    #[arg(long, value_enum, default_value_t = GenerateFormat::All, requires = "out")]
    pub format: GenerateFormat,
    /// Write the tenant straight into this data directory, through the
    /// engine's write path, with no server (one that is serving it holds a
    /// lock, and this stops).
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// With --data: the tenant to write.
    #[arg(long, default_value = "bench", requires = "data")]
    pub tenant: String,
    /// With --data: records per write batch.
    #[arg(long, default_value_t = 10_000, requires = "data",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenerateFormat {
    /// `tenant.jsonl` and the CSV tables.
    All,
    /// `tenant.jsonl` only.
    Jsonl,
    /// The CSV tables only.
    Csv,
}

fn parse_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(scale) if scale > 0.0 && scale <= 10.0 => Ok(scale),
        _ => Err("a number above 0 and at most 10".to_owned()),
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, as host:port. Without API keys only loopback
    /// addresses (127.0.0.1, ::1, localhost) are accepted.
    #[arg(long, env = "SEGMENTD_LISTEN", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Data directory (created if missing).
    #[arg(long, env = "SEGMENTD_DATA", default_value = DEFAULT_DATA)]
    pub data: PathBuf,
    /// Bytes of bitmap changes a tenant gathers in its delta log before a
    /// write folds them into the stored bitmaps (more: cheaper writes, a
    /// longer replay at start).
    #[arg(long, env = "SEGMENTD_CHECKPOINT_BYTES",
          default_value_t = crate::store::delta::DEFAULT_CHECKPOINT_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_bytes: u64,
    /// MiB of sled's page cache. The index (bitmaps, customer ids) is held
    /// apart from it, so resident memory is about this plus the index.
    #[arg(long, env = "SEGMENTD_CACHE_MIB",
          default_value_t = crate::store::DEFAULT_CACHE_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    pub cache_mib: u64,
    /// The admin key. With one, keys are on: every segment call needs a
    /// tenant's key, and any address may be listened on. At least 16
    /// characters; keep it in a secret store, not on a command line.
    #[arg(long, env = "SEGMENTD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<crate::auth::Secret>,
    /// A PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, env = "SEGMENTD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "SEGMENTD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`/metrics`), as host:port; `off`
    /// for nowhere. Unset, they are served on 127.0.0.1:9464 if that port
    /// is free (a warning says so if not).
    #[arg(long, env = "SEGMENTD_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Seconds that health says NOT_SERVING after SIGTERM before the
    /// server stops taking calls, so that load balancers move away first.
    #[arg(long, env = "SEGMENTD_DRAIN_SECONDS", default_value_t = 0.0,
          value_parser = parse_seconds)]
    pub drain_seconds: f64,
    /// Calls served at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SEGMENTD_MAX_CONCURRENT_CALLS",
          default_value_t = crate::server::DEFAULT_MAX_CONCURRENT_CALLS as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent_calls: u32,
    /// With keys on, calls of one tenant served at once; more of that
    /// tenant are refused with RESOURCE_EXHAUSTED while others go on.
    #[arg(long, env = "SEGMENTD_MAX_CALLS_PER_TENANT",
          default_value_t = crate::server::DEFAULT_MAX_CALLS_PER_TENANT as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_calls_per_tenant: u32,
    /// Seconds between two moves of the change feed's relative windows
    /// (`WITHIN`, `SINCE`): customers whose events age out leave within it.
    #[arg(long, env = "SEGMENTD_WATCH_TICK_SECONDS",
          default_value_t = crate::server::DEFAULT_WATCH_TICK.as_secs_f64(),
          value_parser = parse_tick)]
    pub watch_tick_seconds: f64,
    /// Seconds the change feed keeps its entries: a watch may resume from
    /// any sequence this recent.
    #[arg(long, env = "SEGMENTD_WATCH_RETENTION_SECONDS",
          default_value_t = crate::server::DEFAULT_WATCH_RETENTION.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=10 * 365 * 86_400))]
    pub watch_retention_seconds: u64,
    /// Do not serve the segment editor page at `/` (the environment twin
    /// takes true/false, yes/no, on/off or 1/0).
    #[arg(long, env = "SEGMENTD_NO_EDITOR", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_editor: bool,
    /// An origin (`https://dashboard.example.com`) whose pages may call the
    /// service over gRPC-Web; repeat for more, or separate with commas.
    #[arg(
        long = "cors-origin",
        env = "SEGMENTD_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// How logs are written to standard error.
    #[arg(long, env = "SEGMENTD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Where `serve` serves metrics unless told otherwise.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

fn parse_tick(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.01..=60.0).contains(&seconds) => Ok(seconds),
        _ => Err("a number of seconds from 0.01 to 60".to_owned()),
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.0..=3600.0).contains(&seconds) => Ok(seconds),
        _ => Err("a number of seconds from 0 to 3600".to_owned()),
    }
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The tenant to load into; created by the first write.
    #[arg(long, env = "SEGMENTD_TENANT")]
    pub tenant: String,
    /// The file's format.
    #[arg(long, value_enum)]
    pub format: ImportFormat,
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
    /// The Klaviyo list a klaviyo-list file holds the members of.
    #[arg(long)]
    pub list: Option<String>,
    /// With klaviyo-list: make the list exactly the file's members, taking
    /// everyone else off it.
    #[arg(long)]
    pub replace: bool,
    /// Go on past lines that cannot be read, list them, and exit non-zero;
    /// without it the import stops at the first one.
    #[arg(long)]
    pub skip_bad: bool,
    /// Rows per call (events or customers).
    #[arg(long, env = "SEGMENTD_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// The file to load.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// CDNOW purchase history: whitespace-separated id, YYYYMMDD date, CDs, dollars.
    Cdnow,
    /// Shopify's customer export CSV (current or older headers).
    ShopifyCustomers,
    /// A Klaviyo list export CSV; needs --list.
    KlaviyoList,
    /// One JSON object per line: {"customer": {...}} or {"event": {...}}.
    EventsJsonl,
}

/// Resolves `host:port` (`localhost:50051` included) to the address to bind.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let mut addresses = text
        .to_socket_addrs()
        .map_err(|error| format!("`{text}` is not a host:port address: {error}"))?;
    addresses
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

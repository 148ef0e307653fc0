//! `segmentd import`: bulk-loads a file into a tenant through a running
//! server. The importer is a gRPC client like any other.
//!
//! A reader thread parses the file into rows while the loader sends the
//! rows before them, so parsing and the server's durable writes overlap;
//! memory stays flat whatever the file's size (a `--replace` list import
//! keeps the ids of the list's members).

pub mod cdnow;
mod csvfile;
pub mod jsonl;
pub mod klaviyo;
pub mod loader;
pub mod shopify;

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use tokio::sync::mpsc;
use tonic::Code;

use crate::cli::{ImportArgs, ImportFormat};
use crate::client::SegmentClient;
use crate::proto::{self, Customer, CustomerKey, Event};
use loader::{LoadSummary, Loader};

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
    /// A bad row in the default mode; `run` names the file.
    #[error("line {line}: {reason}")]
    BadRow {
        line: u64,
        reason: String,
        acknowledged: u64,
    },
    #[error("{count} bad lines were skipped (listed above)")]
    Skipped { count: usize },
    #[error("cannot reach the server at {server}: {message}")]
    Connect { server: String, message: String },
    #[error("{0}")]
    Usage(String),
    /// A fault of the importer itself, not of the file or the server.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the server refused a call: {}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
}

/// An error and its sources, as one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Connects to the server, with the API key if one is given.
pub async fn connect(client: &crate::client::ClientArgs) -> Result<SegmentClient, ImportError> {
    client
        .segments()
        .await
        .map_err(|message| ImportError::Connect {
            server: client.server.clone(),
            message,
        })
}

/// One row of a file, as the reader thread hands it over.
pub enum Row {
    Customer(Customer),
    Event(Event),
    /// A member of the Klaviyo list being imported.
    Member(CustomerKey),
}

/// A row with where it was read.
struct Parsed {
    line: u64,
    /// Bytes of the file read up to here, for the progress line.
    bytes: u64,
    row: Result<Row, String>,
}

/// Rows the reader thread hands over at a time.
const CHUNK: usize = 1_000;
/// Skipped lines the summary lists by number.
const LISTED_SKIPS: usize = 50;

/// Runs an import as the command line asked.
pub async fn run(args: ImportArgs) -> Result<(), ImportError> {
    let started = Instant::now();
    let file = std::fs::File::open(&args.path).map_err(|source| ImportError::Io {
        path: args.path.clone(),
        source,
    })?;
    let klaviyo = args.format == ImportFormat::KlaviyoList;
    if !klaviyo && (args.replace || args.list.is_some()) {
        return Err(ImportError::Usage(
            "--list and --replace are for klaviyo-list imports only".to_owned(),
        ));
    }
    let list = match &args.list {
        Some(list) if list.is_empty() => {
            return Err(ImportError::Usage("--list must not be empty".to_owned()));
        }
        None if klaviyo => {
            return Err(ImportError::Usage(
                "a klaviyo-list import needs --list, the list's id".to_owned(),
            ));
        }
        list => list.clone(),
    };
    let mut client = connect(&args.client).await?;
    let time_zone = tenant_time_zone(&mut client, &args.tenant).await?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);

    let (sender, mut receiver) = mpsc::channel::<Vec<Parsed>>(8);
    let path = args.path.clone();
    let format = args.format;
    let reader = std::thread::spawn(move || read_file(format, &path, file, time_zone, sender));

    let mut loader = Loader::new(
        client,
        &args.tenant,
        args.batch_size as usize,
        args.skip_bad,
    );
    let mut progress = Progress::new(total_bytes);
    let mut members = Vec::new();
    let mut on_list = args.replace.then(HashSet::new);
    let outcome: Result<(), ImportError> = async {
        while let Some(chunk) = receiver.recv().await {
            let mut bytes = 0;
            for parsed in chunk {
                loader.summary.rows += 1;
                bytes = parsed.bytes;
                match parsed.row {
                    Err(reason) => loader.bad(parsed.line, reason)?,
                    Ok(Row::Customer(customer)) => loader.customer(parsed.line, customer).await?,
                    Ok(Row::Event(event)) => loader.event(parsed.line, event).await?,
                    Ok(Row::Member(key)) => {
                        members.push((parsed.line, key));
                        if members.len() >= args.batch_size as usize {
                            let list = list.as_deref().unwrap_or_default();
                            add_members(&mut loader, list, &mut members, on_list.as_mut()).await?;
                        }
                    }
                }
            }
            progress.update(loader.summary.rows, bytes);
        }
        if let Some(list) = &list {
            add_members(&mut loader, list, &mut members, on_list.as_mut()).await?;
        }
        loader.flush().await
    }
    .await;
    // The reader stops once the channel is gone; its own error comes first.
    drop(receiver);
    let read = reader
        .join()
        .unwrap_or_else(|_| Err(ImportError::Internal("the file reader panicked".to_owned())));
    read?;
    outcome.map_err(|error| match error {
        ImportError::BadRow {
            line,
            reason,
            acknowledged,
        } => ImportError::Format {
            path: args.path.clone(),
            line,
            message: format!(
                "{reason}; the import stopped here, {} (--skip-bad goes on past bad lines)",
                match acknowledged {
                    0 => "with nothing applied".to_owned(),
                    line => format!("with the lines up to {line} applied"),
                }
            ),
        },
        error => error,
    })?;

    let mut removed = 0;
    if let (Some(list), Some(on_list)) = (&list, &on_list) {
        if loader.summary.skipped.is_empty() {
            removed = remove_others(&mut loader, &args.tenant, list, on_list).await?;
        } else {
            // A skipped row may have named a member; taking the others off
            // could drop them. Fix the lines and run again.
            eprintln!("--replace: nobody was taken off the list, because lines were skipped");
        }
    }
    progress.finish(loader.summary.rows, total_bytes);
    print_summary(&args, &loader.summary, removed, started.elapsed());
    match loader.summary.skipped.len() {
        0 => Ok(()),
        count => Err(ImportError::Skipped { count }),
    }
}

fn print_summary(args: &ImportArgs, summary: &LoadSummary, removed: u64, took: Duration) {
    let seconds = took.as_secs_f64();
    let mut line = format!(
        "imported {} lines into tenant `{}` in {seconds:.1} s ({:.0} lines/s): ",
        summary.rows,
        args.tenant,
        summary.rows as f64 / seconds.max(1e-6),
    );
    let mut parts = Vec::new();
    if summary.created + summary.updated > 0 || args.format != ImportFormat::Cdnow {
        parts.push(format!(
            "{} customers created, {} updated",
            summary.created, summary.updated
        ));
    }
    parts.push(format!(
        "{} events recorded, {} already present",
        summary.recorded, summary.duplicates
    ));
    if args.replace {
        parts.push(format!("{removed} taken off the list"));
    }
    if !summary.skipped.is_empty() {
        let lines: Vec<String> = summary
            .skipped
            .iter()
            .take(LISTED_SKIPS)
            .map(|(line, _)| line.to_string())
            .collect();
        let more = if summary.skipped.len() > LISTED_SKIPS {
            ", ..."
        } else {
            ""
        };
        parts.push(format!(
            "{} bad lines skipped (lines {}{more})",
            summary.skipped.len(),
            lines.join(", ")
        ));
    }
    line.push_str(&parts.join(", "));
    println!("{line}");
}

/// Reads the whole file on this thread, handing rows over in chunks; stops
/// early when the importer has stopped listening.
fn read_file(
    format: ImportFormat,
    path: &Path,
    file: std::fs::File,
    time_zone: Tz,
    sender: mpsc::Sender<Vec<Parsed>>,
) -> Result<(), ImportError> {
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut emit = |parsed: Parsed| -> bool {
        chunk.push(parsed);
        if chunk.len() < CHUNK {
            return true;
        }
        sender
            .blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
            .is_ok()
    };
    let io = |source| ImportError::Io {
        path: path.to_owned(),
        source,
    };
    let header = |message: String| ImportError::Format {
        path: path.to_owned(),
        line: 1,
        message,
    };
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    match format {
        ImportFormat::Cdnow => read_lines(reader, &mut emit, io, |text, line| {
            cdnow::parse_line(text, line)
                .map(|order| order.map(|order| Row::Event(cdnow::order_event(&order, time_zone))))
        })?,
        ImportFormat::EventsJsonl => {
            let source = jsonl::source_of(path).map_err(io)?;
            let lines = jsonl::LineReader::new(&source).map_err(ImportError::Internal)?;
            read_lines(reader, &mut emit, io, |text, line| {
                lines.record(text, line).map(|record| {
                    record.map(|record| match record {
                        jsonl::Record::Customer(customer) => Row::Customer(customer),
                        jsonl::Record::Event(event) => Row::Event(event),
                    })
                })
            })?
        }
        ImportFormat::ShopifyCustomers => {
            let mut csv = csv_reader(reader);
            let layout = shopify::Layout::new(&csv.headers().map_err(csv_error(path))?.clone())
                .map_err(header)?;
            read_csv(&mut csv, &mut emit, |row| {
                layout.customer(row).map(Row::Customer)
            })
        }
        ImportFormat::KlaviyoList => {
            let mut csv = csv_reader(reader);
            let layout = klaviyo::Layout::new(&csv.headers().map_err(csv_error(path))?.clone())
                .map_err(header)?;
            read_csv(&mut csv, &mut emit, |row| {
                layout.member(row).map(Row::Member)
            })
        }
    }
    if !chunk.is_empty() {
        let _ = sender.blocking_send(chunk);
    }
    Ok(())
}

/// Reads a line-oriented file; `parse` returns `Ok(None)` for lines to skip.
fn read_lines(
    mut reader: impl BufRead,
    emit: &mut impl FnMut(Parsed) -> bool,
    io: impl Fn(std::io::Error) -> ImportError,
    parse: impl Fn(&str, u64) -> Result<Option<Row>, String>,
) -> Result<(), ImportError> {
    let mut text = String::new();
    let mut raw = Vec::new();
    let (mut line, mut bytes) = (0u64, 0u64);
    loop {
        raw.clear();
        let read = reader.read_until(b'\n', &mut raw).map_err(&io)?;
        if read == 0 {
            return Ok(());
        }
        line += 1;
        bytes += read as u64;
        text.clear();
        let row = match std::str::from_utf8(&raw) {
            Ok(utf8) => {
                text.push_str(utf8);
                parse(text.trim_start_matches('\u{feff}'), line).transpose()
            }
            Err(_) => Some(Err("not UTF-8 text".to_owned())),
        };
        if let Some(row) = row
            && !emit(Parsed { line, bytes, row })
        {
            return Ok(());
        }
    }
}

fn csv_reader<R: std::io::Read>(reader: R) -> csv::Reader<R> {
    // Rows may have fewer or more cells than the header; the layout reads
    // the cells it knows by position.
    csv::ReaderBuilder::new().flexible(true).from_reader(reader)
}

fn csv_error(path: &Path) -> impl Fn(csv::Error) -> ImportError + '_ {
    move |error| ImportError::Format {
        path: path.to_owned(),
        line: csvfile::error_line(&error).unwrap_or(1),
        message: csvfile::reason(&error),
    }
}

/// Reads the records of a CSV file after its header.
fn read_csv<R: std::io::Read>(
    csv: &mut csv::Reader<R>,
    emit: &mut impl FnMut(Parsed) -> bool,
    parse: impl Fn(&csv::StringRecord) -> Result<Row, String>,
) {
    let mut record = csv::StringRecord::new();
    let mut last_line = 1;
    loop {
        let (line, row) = match csv.read_record(&mut record) {
            Ok(false) => return,
            Ok(true) => {
                let line = record.position().map_or(last_line + 1, csv::Position::line);
                (line, parse(&record))
            }
            Err(error) => {
                let line = csvfile::error_line(&error).unwrap_or(last_line + 1);
                let row = Err(csvfile::reason(&error));
                // An I/O error cannot be read past.
                if matches!(error.kind(), csv::ErrorKind::Io(_)) {
                    emit(Parsed {
                        line,
                        bytes: csv.position().byte(),
                        row,
                    });
                    return;
                }
                (line, row)
            }
        };
        last_line = line;
        let bytes = csv.position().byte();
        if !emit(Parsed { line, bytes, row }) {
            return;
        }
    }
}

/// Puts matched (or new) customers on the list.
async fn add_members(
    loader: &mut Loader,
    list: &str,
    members: &mut Vec<(u64, CustomerKey)>,
    mut on_list: Option<&mut HashSet<String>>,
) -> Result<(), ImportError> {
    if members.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(members);
    let request = proto::MatchCustomersRequest {
        tenant: loader.tenant().to_owned(),
        keys: batch.iter().map(|(_, key)| key.clone()).collect(),
    };
    let matched = match loader.client().match_customers(request).await {
        Ok(response) => response.into_inner().customer_ids,
        // A tenant not created yet has nobody to match.
        Err(status) if status.code() == Code::NotFound => vec![String::new(); batch.len()],
        Err(status) => return Err(status.into()),
    };
    for ((line, key), found) in batch.into_iter().zip(matched) {
        let customer = if found.is_empty() {
            Customer {
                customer_id: if key.customer_id.is_empty() {
                    csvfile::fallback_id(Some(&key.email), Some(&key.phone)).unwrap_or_default()
                } else {
                    key.customer_id.clone()
                },
                email: (!key.email.is_empty()).then(|| key.email.clone()),
                phone: (!key.phone.is_empty()).then(|| key.phone.clone()),
                add_klaviyo_lists: vec![list.to_owned()],
                ..Customer::default()
            }
        } else {
            Customer {
                customer_id: found,
                add_klaviyo_lists: vec![list.to_owned()],
                ..Customer::default()
            }
        };
        if let Some(on_list) = on_list.as_deref_mut() {
            on_list.insert(customer.customer_id.clone());
        }
        loader.customer(line, customer).await?;
    }
    Ok(())
}

/// Takes everyone off the list whom the file did not name (`--replace`).
async fn remove_others(
    loader: &mut Loader,
    tenant: &str,
    list: &str,
    on_list: &HashSet<String>,
) -> Result<u64, ImportError> {
    use proto::{Predicate, Rule, SetCondition, SetField, predicate, rule};
    let rule = Rule {
        node: Some(rule::Node::Predicate(Predicate {
            qualifier: Some(predicate::Qualifier::Set(SetCondition {
                field: SetField::KlaviyoList as i32,
                values: vec![list.to_owned()],
            })),
        })),
    };
    let request = proto::ExportAudienceRequest {
        tenant: tenant.to_owned(),
        audience: Some(proto::export_audience_request::Audience::Rule(rule)),
        as_of: None,
    };
    let mut leaving = Vec::new();
    match loader.client().export_audience(request).await {
        Ok(response) => {
            let mut stream = response.into_inner();
            while let Some(part) = stream.message().await? {
                leaving.extend(
                    part.customer_ids
                        .into_iter()
                        .filter(|id| !on_list.contains(id)),
                );
            }
        }
        Err(status) if status.code() == Code::NotFound => return Ok(0),
        Err(status) => return Err(status.into()),
    }
    let removed = leaving.len() as u64;
    for customer_id in leaving {
        let customer = Customer {
            customer_id,
            remove_klaviyo_lists: vec![list.to_owned()],
            ..Customer::default()
        };
        loader.customer(0, customer).await?;
    }
    loader.flush().await?;
    Ok(removed)
}

/// The tenant's time zone, or UTC for a tenant that does not exist yet.
async fn tenant_time_zone(client: &mut SegmentClient, tenant: &str) -> Result<Tz, ImportError> {
    let request = proto::GetTenantRequest {
        tenant: tenant.to_owned(),
    };
    match client.get_tenant(request).await {
        Ok(response) => Ok(response.into_inner().time_zone.parse().unwrap_or(Tz::UTC)),
        Err(status) if status.code() == Code::NotFound => Ok(Tz::UTC),
        Err(status) => Err(status.into()),
    }
}

/// How far an import is: a bar with rate and time left on a terminal,
/// a plain line every few seconds otherwise.
enum Progress {
    Bar(indicatif::ProgressBar),
    Lines {
        started: Instant,
        last: Instant,
        total_bytes: u64,
    },
}

impl Progress {
    fn new(total_bytes: u64) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total_bytes);
            let style = indicatif::ProgressStyle::with_template(
                "{bar:40} {percent:>3}%  {msg} lines  {binary_bytes_per_sec}  {eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            Progress::Bar(bar)
        } else {
            let now = Instant::now();
            Progress::Lines {
                started: now,
                last: now,
                total_bytes,
            }
        }
    }

    fn update(&mut self, lines: u64, bytes: u64) {
        match self {
            Progress::Bar(bar) => {
                bar.set_position(bytes);
                bar.set_message(lines.to_string());
            }
            Progress::Lines {
                started,
                last,
                total_bytes,
            } => {
                if last.elapsed() < Duration::from_secs(2) {
                    return;
                }
                *last = Instant::now();
                let seconds = started.elapsed().as_secs_f64().max(1e-6);
                let fraction = if *total_bytes == 0 {
                    1.0
                } else {
                    (bytes as f64 / *total_bytes as f64).min(1.0)
                };
                let remaining = if fraction > 0.0 {
                    seconds * (1.0 - fraction) / fraction
                } else {
                    0.0
                };
                eprintln!(
                    "{:5.1}%  {lines} lines  {:.0} lines/s  about {remaining:.0} s left",
                    fraction * 100.0,
                    lines as f64 / seconds
                );
            }
        }
    }

    fn finish(&mut self, lines: u64, bytes: u64) {
        match self {
            Progress::Bar(bar) => {
                bar.set_position(bytes);
                bar.set_message(lines.to_string());
                bar.finish_and_clear();
            }
            Progress::Lines { .. } => {}
        }
    }
}

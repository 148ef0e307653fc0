//! Sends parsed rows to the server in batches and decides what a bad row
//! does: stop the import (the default) or be skipped, counted and listed
//! (`--skip-bad`).
//!
//! Customers and events are batched apart, so a file that mixes them line
//! by line still goes in full batches; when either batch is full both are
//! sent, customers first. A batch is one atomic call, so when the import
//! stops nothing past the last acknowledged batch is applied. The server
//! checks every item; when it refuses one (`events[3].time: ...`), the
//! error names the item, which the loader maps back to its line.

use std::future::Future;

use tonic::{Code, Status};

use super::ImportError;
use crate::proto::{self, Customer, Event};

type Client = crate::client::SegmentClient;

/// What an import did, for its closing line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadSummary {
    /// Rows read (bad ones included).
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub recorded: u64,
    pub duplicates: u64,
    /// (line, reason) of every row skipped.
    pub skipped: Vec<(u64, String)>,
    /// Every line up to this one is applied (0: none yet).
    pub acknowledged_line: u64,
}

/// A kind of row that goes to the server in batches.
trait Batched: Clone + Send + 'static {
    /// The request field that holds the batch, as error messages name it.
    const FIELD: &'static str;
    /// Sends one batch and adds what the server did to `summary`.
    fn send(
        client: &mut Client,
        tenant: &str,
        batch: Vec<Self>,
        summary: &mut LoadSummary,
    ) -> impl Future<Output = Result<(), Status>> + Send;
}

impl Batched for Customer {
    const FIELD: &'static str = "customers";

    async fn send(
        client: &mut Client,
        tenant: &str,
        batch: Vec<Self>,
        summary: &mut LoadSummary,
    ) -> Result<(), Status> {
        let request = proto::UpsertCustomersRequest {
            tenant: tenant.to_owned(),
            customers: batch,
        };
        let response = client.upsert_customers(request).await?.into_inner();
        summary.created += u64::from(response.created_count);
        summary.updated += u64::from(response.updated_count);
        Ok(())
    }
}

impl Batched for Event {
    const FIELD: &'static str = "events";

    async fn send(
        client: &mut Client,
        tenant: &str,
        batch: Vec<Self>,
        summary: &mut LoadSummary,
    ) -> Result<(), Status> {
        let request = proto::RecordEventsRequest {
            tenant: tenant.to_owned(),
            events: batch,
        };
        let response = client.record_events(request).await?.into_inner();
        summary.recorded += u64::from(response.recorded_count);
        summary.duplicates += u64::from(response.duplicate_count);
        Ok(())
    }
}

/// Batches the rows of one file into calls.
pub struct Loader {
    client: Client,
    tenant: String,
    batch_size: usize,
    skip_bad: bool,
    customers: Vec<(u64, Customer)>,
    events: Vec<(u64, Event)>,
    /// The last line handed to the loader.
    last_line: u64,
    pub summary: LoadSummary,
}

impl Loader {
    /// A loader into `tenant` that sends `batch_size` rows per call.
    pub fn new(client: Client, tenant: &str, batch_size: usize, skip_bad: bool) -> Self {
        Loader {
            client,
            tenant: tenant.to_owned(),
            batch_size,
            skip_bad,
            customers: Vec::new(),
            events: Vec::new(),
            last_line: 0,
            summary: LoadSummary::default(),
        }
    }

    /// The client, for calls of the importer's own (matching, listing).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Whether bad rows are skipped rather than stopping the import.
    pub fn skips_bad(&self) -> bool {
        self.skip_bad
    }

    /// A row that cannot be read: stops the import, or is skipped.
    pub fn bad(&mut self, line: u64, reason: String) -> Result<(), ImportError> {
        if !self.skip_bad {
            return Err(ImportError::BadRow {
                line,
                reason,
                acknowledged: self.summary.acknowledged_line,
            });
        }
        eprintln!("skipped line {line}: {reason}");
        self.summary.skipped.push((line, reason));
        Ok(())
    }

    /// Queues a customer update read at `line`.
    pub async fn customer(&mut self, line: u64, customer: Customer) -> Result<(), ImportError> {
        self.customers.push((line, customer));
        self.queued(line).await
    }

    /// Queues an event read at `line`.
    pub async fn event(&mut self, line: u64, event: Event) -> Result<(), ImportError> {
        self.events.push((line, event));
        self.queued(line).await
    }

    async fn queued(&mut self, line: u64) -> Result<(), ImportError> {
        self.last_line = self.last_line.max(line);
        if self.customers.len().max(self.events.len()) >= self.batch_size {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends everything queued: customers first, then events.
    pub async fn flush(&mut self) -> Result<(), ImportError> {
        let customers = std::mem::take(&mut self.customers);
        self.send_all(customers).await?;
        let events = std::mem::take(&mut self.events);
        self.send_all(events).await?;
        self.summary.acknowledged_line = self.last_line;
        Ok(())
    }

    /// Sends one batch; a refused item is mapped to its line, then stops
    /// the import or is dropped and the rest sent again.
    async fn send_all<T: Batched>(&mut self, mut rows: Vec<(u64, T)>) -> Result<(), ImportError> {
        while !rows.is_empty() {
            let batch = rows.iter().map(|(_, row)| row.clone()).collect();
            match T::send(&mut self.client, &self.tenant, batch, &mut self.summary).await {
                Ok(()) => break,
                Err(status) => {
                    let (item, reason) = refused_item(&status, T::FIELD)?;
                    let (line, _) = rows.remove(item);
                    self.bad(line, reason)?;
                }
            }
        }
        Ok(())
    }
}

/// The position of the item an `INVALID_ARGUMENT` names (`events[3].time:
/// ...`) and the reason without that position (`time: ...`); any other
/// error stops the import.
fn refused_item(status: &Status, field: &str) -> Result<(usize, String), ImportError> {
    let refused = (status.code() == Code::InvalidArgument)
        .then(|| status.message().strip_prefix(field)?.strip_prefix('['))
        .flatten()
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(position, reason)| {
            let reason = reason.strip_prefix('.').unwrap_or(reason);
            Some((position.parse().ok()?, reason.to_owned()))
        });
    refused.ok_or_else(|| ImportError::Rpc(status.clone()))
}

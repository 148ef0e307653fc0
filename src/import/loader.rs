//! Sends parsed rows to the server in batches, keeping the order of the
//! file, and decides what a bad row does: stop the import (the default) or
//! be skipped, counted and listed (`--skip-bad`).
//!
//! A batch is one atomic call, so when the import stops nothing past the
//! last acknowledged batch is applied. The server checks every item; when
//! it refuses one (`events[3].time: ...`), the error names the item, which
//! the loader maps back to its line.

use tonic::Code;
use tonic::transport::Channel;

use super::ImportError;
use crate::proto::segment_service_client::SegmentServiceClient;
use crate::proto::{self, Customer, Event};

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
    /// The last line of the last acknowledged batch.
    pub acknowledged_line: u64,
}

enum Pending {
    Customers(Vec<(u64, Customer)>),
    Events(Vec<(u64, Event)>),
}

/// Batches rows of one file into calls.
pub struct Loader {
    client: SegmentServiceClient<Channel>,
    tenant: String,
    batch_size: usize,
    skip_bad: bool,
    pending: Option<Pending>,
    pub summary: LoadSummary,
}

impl Loader {
    pub fn new(
        client: SegmentServiceClient<Channel>,
        tenant: &str,
        batch_size: usize,
        skip_bad: bool,
    ) -> Self {
        Loader {
            client,
            tenant: tenant.to_owned(),
            batch_size,
            skip_bad,
            pending: None,
            summary: LoadSummary::default(),
        }
    }

    pub fn client(&mut self) -> &mut SegmentServiceClient<Channel> {
        &mut self.client
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
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

    pub async fn customer(&mut self, line: u64, customer: Customer) -> Result<(), ImportError> {
        if matches!(self.pending, Some(Pending::Events(_))) {
            self.flush().await?;
        }
        let Pending::Customers(rows) = self
            .pending
            .get_or_insert_with(|| Pending::Customers(Vec::new()))
        else {
            unreachable!("flushed above")
        };
        rows.push((line, customer));
        if rows.len() >= self.batch_size {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn event(&mut self, line: u64, event: Event) -> Result<(), ImportError> {
        if matches!(self.pending, Some(Pending::Customers(_))) {
            self.flush().await?;
        }
        let Pending::Events(rows) = self
            .pending
            .get_or_insert_with(|| Pending::Events(Vec::new()))
        else {
            unreachable!("flushed above")
        };
        rows.push((line, event));
        if rows.len() >= self.batch_size {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what is pending as one call; a refused item is mapped to its
    /// line, then stops the import or is dropped and the rest sent again.
    pub async fn flush(&mut self) -> Result<(), ImportError> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        match pending {
            Pending::Customers(mut rows) => {
                while !rows.is_empty() {
                    let request = proto::UpsertCustomersRequest {
                        tenant: self.tenant.clone(),
                        customers: rows.iter().map(|(_, c)| c.clone()).collect(),
                    };
                    match self.client.upsert_customers(request).await {
                        Ok(response) => {
                            let response = response.into_inner();
                            self.summary.created += u64::from(response.created_count);
                            self.summary.updated += u64::from(response.updated_count);
                            self.acknowledge(rows.last().map(|(line, _)| *line));
                            break;
                        }
                        Err(status) => {
                            let item = refused_item(&status, "customers")?;
                            let (line, _) = rows.remove(item);
                            self.bad(line, status.message().to_owned())?;
                        }
                    }
                }
            }
            Pending::Events(mut rows) => {
                while !rows.is_empty() {
                    let request = proto::RecordEventsRequest {
                        tenant: self.tenant.clone(),
                        events: rows.iter().map(|(_, e)| e.clone()).collect(),
                    };
                    match self.client.record_events(request).await {
                        Ok(response) => {
                            let response = response.into_inner();
                            self.summary.recorded += u64::from(response.recorded_count);
                            self.summary.duplicates += u64::from(response.duplicate_count);
                            self.acknowledge(rows.last().map(|(line, _)| *line));
                            break;
                        }
                        Err(status) => {
                            let item = refused_item(&status, "events")?;
                            let (line, _) = rows.remove(item);
                            self.bad(line, status.message().to_owned())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn acknowledge(&mut self, line: Option<u64>) {
        if let Some(line) = line {
            self.summary.acknowledged_line = self.summary.acknowledged_line.max(line);
        }
    }
}

/// The position of the item an `INVALID_ARGUMENT` names (`events[3].time:
/// ...`); any other error stops the import.
fn refused_item(status: &tonic::Status, field: &str) -> Result<usize, ImportError> {
    let item = (status.code() == Code::InvalidArgument)
        .then(|| status.message().strip_prefix(field)?.strip_prefix('['))
        .flatten()
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(position, _)| position.parse().ok());
    item.ok_or_else(|| ImportError::Rpc(status.clone()))
}

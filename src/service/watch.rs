//! `WatchSegmentChanges`: the change feed of saved segments as a server
//! stream. Without `after_sequence` it starts with the segments' members
//! (cause INITIAL); then it sends every stored change of the followed
//! segments in sequence order, waiting for new ones as they become durable.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use super::audiences::DeadlineStream;
use super::{Segments, convert, log_call, refuse};
use crate::engine::Engine;
use crate::engine::feed::{MAX_IDS_PER_ENTRY, MAX_WATCHED_SEGMENTS};
use crate::error::{Error, Result};
use crate::proto;
use crate::proto::ChangeCause;
use crate::store::feed::{ChangeCause as StoredCause, FeedEntry};

/// Messages buffered ahead of a slow reader.
const BUFFER: usize = 16;
/// How long a watch waits for its caller to read a message before it
/// takes the caller to be gone.
const STALL: Duration = Duration::from_secs(60);

pub type WatchStream =
    DeadlineStream<ReceiverStream<Result<proto::WatchSegmentChangesResponse, Status>>>;

impl Segments {
    pub(super) async fn watch(
        &self,
        request: proto::WatchSegmentChangesRequest,
    ) -> Result<Response<WatchStream>, Status> {
        const RPC: &str = "WatchSegmentChanges";
        let proto::WatchSegmentChangesRequest {
            tenant,
            segment_ids,
            after_sequence,
        } = request;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let segment_ids = watched_segments(segment_ids)?;
            Ok((tenant, segment_ids))
        })();
        let (tenant_name, segment_ids) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        // Unknown segments, tenants and sequences are the call's status.
        let name = tenant_name.clone();
        let ids = segment_ids.clone();
        let (watch, start) = self
            .call(RPC, &tenant_name, move |engine| {
                let watch = engine.feed_watch(&name, &ids)?;
                let start = match after_sequence {
                    Some(after) => {
                        engine.feed_read(&name, after)?;
                        Start::After(after)
                    }
                    None => Start::Initial(engine.feed_initial(&name, &ids)?),
                };
                Ok((watch, start))
            })
            .await?;

        let crate::gate::CallContext { deadline, slot } = crate::gate::current();
        let (sender, receiver) = mpsc::channel(BUFFER);
        let engine = self.engine.clone();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            let following = follow(&engine, &tenant_name, &segment_ids, start, watch, &sender);
            let outcome = tokio::select! {
                outcome = following => outcome,
                Ok(_) = stop.wait_for(|stop| *stop) => Err(Error::Unavailable(
                    "the server is stopping: watch again with after_sequence set to the last \
                     sequence you processed".to_owned(),
                )),
            };
            match outcome {
                Ok(()) => tracing::debug!(rpc = RPC, tenant = tenant_name, "watch ended"),
                Err(error) => {
                    if error.is_internal() {
                        tracing::error!(rpc = RPC, tenant = tenant_name, %error, "internal error");
                    }
                    let status = Status::from(error);
                    log_call(RPC, &tenant_name, started, Some(&status));
                    let _ = sender.send(Err(status)).await;
                }
            }
        });
        Ok(Response::new(DeadlineStream::new(
            ReceiverStream::new(receiver),
            deadline,
        )))
    }
}

/// Where a watch starts.
enum Start {
    After(u64),
    Initial(crate::engine::feed::FeedInitial),
}

/// The followed segments: one to `MAX_WATCHED_SEGMENTS` valid ids, repeats
/// dropped.
fn watched_segments(segment_ids: Vec<String>) -> Result<Vec<String>> {
    if segment_ids.is_empty() {
        return Err(Error::invalid("segment_ids", "name at least one segment"));
    }
    if segment_ids.len() > MAX_WATCHED_SEGMENTS {
        return Err(Error::invalid(
            "segment_ids",
            format!("at most {MAX_WATCHED_SEGMENTS} segments may be followed by one watch"),
        ));
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(segment_ids.len());
    for (position, segment_id) in segment_ids.into_iter().enumerate() {
        let segment_id = convert::id(&segment_id, &format!("segment_ids[{position}]"))?;
        if seen.insert(segment_id.clone()) {
            ids.push(segment_id);
        }
    }
    Ok(ids)
}

/// Sends the start, then every change of `segment_ids`, until the caller
/// goes away or stops reading.
async fn follow(
    engine: &std::sync::Arc<Engine>,
    tenant: &str,
    segment_ids: &[String],
    start: Start,
    mut watch: crate::engine::feed::FeedWatch,
    sender: &mpsc::Sender<Result<proto::WatchSegmentChangesResponse, Status>>,
) -> Result<()> {
    let followed: HashSet<&str> = segment_ids.iter().map(String::as_str).collect();
    let mut after = match start {
        Start::After(after) => after,
        Start::Initial(initial) => {
            for (segment_id, members) in initial.segments {
                for part in members.chunks(MAX_IDS_PER_ENTRY) {
                    let message = proto::WatchSegmentChangesResponse {
                        sequence: initial.sequence,
                        segment_id: segment_id.clone(),
                        entered_customer_ids: part.to_vec(),
                        left_customer_ids: Vec::new(),
                        cause: ChangeCause::Initial as i32,
                        time: Some(timestamp(initial.time)),
                    };
                    if !deliver(sender, message).await {
                        return Ok(());
                    }
                }
            }
            initial.sequence
        }
    };
    loop {
        let name = tenant.to_owned();
        let read = {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || engine.feed_read(&name, after))
                .await
                .map_err(|join| Error::Internal(format!("feed read panicked: {join}")))??
        };
        for (sequence, entry) in read.entries {
            if !followed.contains(entry.segment_id.as_str()) {
                continue;
            }
            if !deliver(sender, message_of(sequence, entry)).await {
                return Ok(());
            }
        }
        after = read.through;
        if *watch.published.borrow() <= after {
            // Wait for the head to move, or for the caller to go.
            tokio::select! {
                changed = watch.published.wait_for(|&published| published > after) => {
                    if changed.is_err() {
                        return Err(Error::Internal("the tenant's feed went away".to_owned()));
                    }
                }
                () = sender.closed() => return Ok(()),
            }
        }
    }
}

async fn deliver(
    sender: &mpsc::Sender<Result<proto::WatchSegmentChangesResponse, Status>>,
    message: proto::WatchSegmentChangesResponse,
) -> bool {
    matches!(
        tokio::time::timeout(STALL, sender.send(Ok(message))).await,
        Ok(Ok(()))
    )
}

fn message_of(sequence: u64, entry: FeedEntry) -> proto::WatchSegmentChangesResponse {
    let FeedEntry {
        segment_id,
        cause,
        time,
        entered,
        left,
    } = entry;
    let cause = match cause {
        StoredCause::Write => ChangeCause::Write,
        StoredCause::SegmentEdit => ChangeCause::SegmentEdit,
        StoredCause::Time => ChangeCause::Time,
        StoredCause::Recovery => ChangeCause::Recovery,
    };
    proto::WatchSegmentChangesResponse {
        sequence,
        segment_id,
        entered_customer_ids: entered.into_iter().map(|(_, id)| id).collect(),
        left_customer_ids: left.into_iter().map(|(_, id)| id).collect(),
        cause: cause as i32,
        time: Some(timestamp(time)),
    }
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

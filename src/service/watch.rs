//! `WatchSegmentChanges`: the change feed of saved segments as a server
//! stream. Without `after_sequence` it starts with the segments' members
//! (cause INITIAL); then it sends every stored change of the followed
//! segments in sequence order, waiting for new ones as they become durable.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use super::audiences::DeadlineStream;
use super::{Segments, convert, log_call, now, refuse};
use crate::engine::Engine;
use crate::engine::feed::{MAX_IDS_PER_ENTRY, MAX_WATCHED_SEGMENTS};
use crate::error::{Error, Result};
use crate::proto;
use crate::proto::ChangeCause;
use crate::store::feed::{ChangeCause as StoredCause, FeedEntry};

/// Messages buffered ahead of a slow reader (each at most 10,000 ids).
const BUFFER: usize = 4;
/// How long a watch waits for its caller to read a message before it
/// takes the caller to be gone.
const STALL: Duration = Duration::from_secs(60);

/// The stream a watch answers with.
pub type WatchStream =
    DeadlineStream<Ending<ReceiverStream<Result<proto::WatchSegmentChangesResponse, Status>>>>;

impl Segments {
    /// `WatchSegmentChanges`: checks the request and where it starts (the
    /// call's status), then streams from a task of its own.
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
                    // The first read is the stream's first batch.
                    Some(after) => Beginning::After(engine.feed_read(&name, after)?),
                    None => Beginning::Initial(engine.feed_initial(&name, &ids, now())?),
                };
                Ok((watch, start))
            })
            .await?;

        let crate::gate::CallContext { deadline, slot } = crate::gate::current();
        let (sender, receiver) = mpsc::channel(BUFFER);
        let last_word: LastWord = Arc::default();
        let engine = self.engine.clone();
        let mut stop = self.stop.clone();
        let said = last_word.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            let following = follow(&engine, &tenant_name, &segment_ids, start, watch, &sender);
            let outcome = tokio::select! {
                outcome = following => outcome,
                Ok(_) = stop.wait_for(|stop| *stop) => Err(Ended::Failed(Error::Unavailable(
                    "the server is stopping: resume with after_sequence".to_owned(),
                ))),
            };
            let error = match outcome {
                Ok(()) | Err(Ended::CallerGone) => None,
                Err(Ended::Stalled) => Some(Error::ResourceExhausted(format!(
                    "the watch read nothing for {} s: resume with after_sequence",
                    STALL.as_secs()
                ))),
                Err(Ended::Failed(error)) => Some(error),
            };
            if let Some(error) = error {
                if error.is_internal() {
                    tracing::error!(rpc = RPC, tenant = tenant_name, %error, "internal error");
                }
                let status = Status::from(error);
                log_call(RPC, &tenant_name, started, Some(&status));
                // Said after the messages already queued, however full the
                // queue: the sender goes when this task ends.
                *said.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
            }
        });
        let stream = Ending {
            inner: ReceiverStream::new(receiver),
            last_word,
        };
        Ok(Response::new(DeadlineStream::new(stream, deadline)))
    }
}

/// The status a watch ends with, if not OK.
type LastWord = Arc<Mutex<Option<Status>>>;

/// A stream of the queued messages, then the watch's last word.
pub struct Ending<S> {
    inner: S,
    last_word: LastWord,
}

impl<S> tokio_stream::Stream for Ending<S>
where
    S: tokio_stream::Stream<Item = Result<proto::WatchSegmentChangesResponse, Status>> + Unpin,
{
    type Item = Result<proto::WatchSegmentChangesResponse, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(None) => {
                let last = self
                    .last_word
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                Poll::Ready(last.map(Err))
            }
            other => other,
        }
    }
}

/// Where a watch begins.
enum Beginning {
    /// After a sequence: the first entries after it, read.
    After(crate::engine::feed::FeedRead),
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
    start: Beginning,
    mut watch: crate::engine::feed::FeedWatch,
    sender: &mpsc::Sender<Result<proto::WatchSegmentChangesResponse, Status>>,
) -> Result<(), Ended> {
    let followed: HashSet<&str> = segment_ids.iter().map(String::as_str).collect();
    let (mut after, mut first) = match start {
        Beginning::After(read) => (0, Some(read)),
        Beginning::Initial(initial) => {
            // At least one message a segment, the last one marked.
            let mut messages = Vec::new();
            for (segment_id, members) in initial.segments {
                let mut parts: Vec<&[String]> = members.chunks(MAX_IDS_PER_ENTRY).collect();
                if parts.is_empty() {
                    parts.push(&[]);
                }
                for part in parts {
                    messages.push(proto::WatchSegmentChangesResponse {
                        sequence: initial.sequence,
                        segment_id: segment_id.clone(),
                        entered_customer_ids: part.to_vec(),
                        left_customer_ids: Vec::new(),
                        cause: ChangeCause::Initial as i32,
                        time: Some(timestamp(initial.time)),
                        initial_complete: false,
                    });
                }
            }
            if let Some(last) = messages.last_mut() {
                last.initial_complete = true;
            }
            for message in messages {
                deliver(sender, message).await?;
            }
            (initial.sequence, None)
        }
    };
    loop {
        let read = match first.take() {
            Some(read) => read,
            None => {
                let (engine, name) = (engine.clone(), tenant.to_owned());
                tokio::task::spawn_blocking(move || engine.feed_read(&name, after))
                    .await
                    .map_err(|join| Error::Internal(format!("feed read panicked: {join}")))??
            }
        };
        for (sequence, entry) in read.entries {
            if !followed.contains(entry.segment_id.as_str()) {
                continue;
            }
            deliver(sender, message_of(sequence, entry)).await?;
        }
        after = read.through;
        if *watch.published.borrow() <= after {
            // Wait for the head to move, or for the caller to go.
            tokio::select! {
                changed = watch.published.wait_for(|&published| published > after) => {
                    if changed.is_err() {
                        let gone = Error::Internal("the tenant's feed went away".to_owned());
                        return Err(gone.into());
                    }
                }
                () = sender.closed() => return Err(Ended::CallerGone),
            }
        }
    }
}

/// Sends one message; a caller gone ends the watch quietly, one that reads
/// nothing for `STALL` gets an error.
async fn deliver(
    sender: &mpsc::Sender<Result<proto::WatchSegmentChangesResponse, Status>>,
    message: proto::WatchSegmentChangesResponse,
) -> Result<(), Ended> {
    match tokio::time::timeout(STALL, sender.send(Ok(message))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ended::CallerGone),
        Err(_) => Err(Ended::Stalled),
    }
}

/// Why a watch stopped sending.
enum Ended {
    CallerGone,
    Stalled,
    Failed(Error),
}

impl From<Error> for Ended {
    fn from(error: Error) -> Self {
        Ended::Failed(error)
    }
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
        initial_complete: false,
    }
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

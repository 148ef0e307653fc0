//! Handlers of the audience RPCs beyond counting and paging: exports,
//! snapshots, membership explanations, overlap and differences.

use std::time::Instant;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use super::convert::{self, AudienceField};
use super::{
    DEFAULT_SEGMENT_PAGE_SIZE, MAX_SEGMENT_PAGE_SIZE, Segments, log_call, now, now_micros,
    page_size_of, refuse, size_of, token,
};
use crate::engine::audience::MAX_OVERLAP_AUDIENCES;
use crate::engine::explain::MAX_EXPLAINED_SEGMENTS;
use crate::engine::snapshots::SnapshotInput;
use crate::engine::types::{Audience, Decision};
use crate::error::{Error, Result};
use crate::proto;

/// Export messages buffered ahead of a slow reader.
const EXPORT_BUFFER: usize = 4;
/// How long an export waits for its caller to read before it gives up.
const EXPORT_STALL: std::time::Duration = std::time::Duration::from_secs(60);
/// Sample size of `DiffAudiences` when the caller gives none.
const DEFAULT_SAMPLE: usize = 10;
/// Largest sample of `DiffAudiences`.
const MAX_SAMPLE: usize = 1_000;

pub type ExportStream =
    DeadlineStream<ReceiverStream<Result<proto::ExportAudienceResponse, Status>>>;

/// A stream that ends with `DEADLINE_EXCEEDED` when the caller's deadline
/// passes; dropping the inner stream then stops whatever feeds it.
pub struct DeadlineStream<S> {
    inner: Option<S>,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> DeadlineStream<S> {
    pub(super) fn new(inner: S, deadline: Option<Instant>) -> Self {
        DeadlineStream {
            inner: Some(inner),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at.into()))),
        }
    }
}

impl<S, T> tokio_stream::Stream for DeadlineStream<S>
where
    S: tokio_stream::Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.inner.is_none() {
            return Poll::Ready(None);
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.inner = None;
            return Poll::Ready(Some(Err(Status::deadline_exceeded(
                "the call's deadline (grpc-timeout) passed before the stream ended",
            ))));
        }
        let polled = std::pin::Pin::new(self.inner.as_mut().expect("checked above")).poll_next(cx);
        if let Poll::Ready(None) = polled {
            self.inner = None;
        }
        polled
    }
}

impl Segments {
    pub(super) async fn export(
        &self,
        request: proto::ExportAudienceRequest,
    ) -> Result<Response<ExportStream>, Status> {
        const RPC: &str = "ExportAudience";
        let proto::ExportAudienceRequest {
            tenant,
            audience,
            as_of,
        } = request;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let audience = convert::audience(audience.map(AudienceField::from))?;
            let instant = convert::instant(as_of.as_ref(), now())?;
            Ok((tenant, audience, instant))
        })();
        let (tenant_name, audience, instant) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        // The audience is evaluated before the stream starts, so that
        // NOT_FOUND and friends arrive as the call's status.
        let name = tenant_name.clone();
        let members = self
            .call(RPC, &tenant_name, move |engine| {
                engine.members(&name, &audience, instant)
            })
            .await?;

        let crate::gate::CallContext { deadline, slot } = crate::gate::current();
        let (sender, receiver) = tokio::sync::mpsc::channel(EXPORT_BUFFER);
        let engine = self.engine.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let started = Instant::now();
            let mut sent = 0u64;
            let outcome = engine.export(&tenant_name, &members, |customer_ids, total| {
                sent += customer_ids.len() as u64;
                let message = proto::ExportAudienceResponse {
                    customer_ids,
                    total_count: total,
                };
                // An error means the caller went away, and a caller that
                // reads nothing for EXPORT_STALL is taken to have: stop.
                let delivered =
                    runtime.block_on(tokio::time::timeout(EXPORT_STALL, sender.send(Ok(message))));
                matches!(delivered, Ok(Ok(())))
            });
            let micros = started.elapsed().as_micros() as u64;
            match outcome {
                Ok(()) => {
                    tracing::debug!(rpc = RPC, tenant = tenant_name, sent, micros, "streamed")
                }
                Err(error) => {
                    if error.is_internal() {
                        tracing::error!(rpc = RPC, tenant = tenant_name, %error, "internal error");
                    }
                    let status = Status::from(error);
                    log_call(RPC, &tenant_name, started, Some(&status));
                    let _ = sender.blocking_send(Err(status));
                }
            }
        });
        Ok(Response::new(DeadlineStream::new(
            ReceiverStream::new(receiver),
            deadline,
        )))
    }

    pub(super) async fn create_snapshot(
        &self,
        request: proto::CreateSnapshotRequest,
    ) -> Result<proto::CreateSnapshotResponse, Status> {
        const RPC: &str = "CreateSnapshot";
        let proto::CreateSnapshotRequest {
            tenant,
            snapshot_id,
            audience,
            as_of,
            title,
        } = request;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let snapshot_id = (!snapshot_id.is_empty())
                .then(|| convert::id(&snapshot_id, "snapshot_id"))
                .transpose()?;
            // This request's own `snapshot_id` names the new snapshot, so
            // the audience is one of the other three.
            let audience = audience.ok_or_else(|| {
                Error::invalid("audience", "give one of rule_text, rule or segment_id")
            })?;
            let audience = convert::audience(Some(AudienceField::from(audience)))?;
            let as_of = convert::instant(as_of.as_ref(), now())?;
            convert::check_title(&title, "title")?;
            Ok((
                tenant,
                SnapshotInput {
                    snapshot_id,
                    title,
                    audience,
                    as_of,
                },
            ))
        })();
        let (tenant_name, input) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };
        let name = tenant_name.clone();
        let info = self
            .call(RPC, &tenant_name, move |engine| {
                engine.create_snapshot(&name, input, now_micros())
            })
            .await?;
        Ok(proto::CreateSnapshotResponse {
            snapshot: Some(convert::snapshot_to_proto(info)),
        })
    }

    pub(super) async fn get_snapshot(
        &self,
        request: proto::GetSnapshotRequest,
    ) -> Result<proto::GetSnapshotResponse, Status> {
        const RPC: &str = "GetSnapshot";
        let proto::GetSnapshotRequest {
            tenant,
            snapshot_id,
        } = request;
        let (tenant_name, snapshot_id) = match tenant_and_id(&tenant, &snapshot_id, "snapshot_id") {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };
        let name = tenant_name.clone();
        let info = self
            .call(RPC, &tenant_name, move |engine| {
                engine.get_snapshot(&name, &snapshot_id)
            })
            .await?;
        Ok(proto::GetSnapshotResponse {
            snapshot: Some(convert::snapshot_to_proto(info)),
        })
    }

    pub(super) async fn list_snapshots(
        &self,
        request: proto::ListSnapshotsRequest,
    ) -> Result<proto::ListSnapshotsResponse, Status> {
        const RPC: &str = "ListSnapshots";
        let proto::ListSnapshotsRequest {
            tenant,
            page_size,
            page_token,
        } = request;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let page_size =
                page_size_of(page_size, DEFAULT_SEGMENT_PAGE_SIZE, MAX_SEGMENT_PAGE_SIZE)?;
            let key = token::fingerprint(&[&tenant, "snapshots"]);
            let after = token::decode_listing(&page_token, key)?;
            Ok((tenant, page_size, key, after))
        })();
        let (tenant_name, page_size, key, after) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };
        let name = tenant_name.clone();
        let (infos, more) = self
            .call(RPC, &tenant_name, move |engine| {
                engine.list_snapshots(&name, after.as_deref(), page_size)
            })
            .await?;
        let next_page_token = match (more, infos.last()) {
            (true, Some(last)) => token::encode_listing(key, &last.record.snapshot_id),
            _ => String::new(),
        };
        Ok(proto::ListSnapshotsResponse {
            snapshots: infos.into_iter().map(convert::snapshot_to_proto).collect(),
            next_page_token,
        })
    }

    pub(super) async fn delete_snapshot(
        &self,
        request: proto::DeleteSnapshotRequest,
    ) -> Result<proto::DeleteSnapshotResponse, Status> {
        const RPC: &str = "DeleteSnapshot";
        let proto::DeleteSnapshotRequest {
            tenant,
            snapshot_id,
        } = request;
        let (tenant_name, snapshot_id) = match tenant_and_id(&tenant, &snapshot_id, "snapshot_id") {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };
        let name = tenant_name.clone();
        self.call(RPC, &tenant_name, move |engine| {
            engine.delete_snapshot(&name, &snapshot_id)
        })
        .await?;
        Ok(proto::DeleteSnapshotResponse {})
    }

    pub(super) async fn explain_membership(
        &self,
        request: proto::ExplainMembershipRequest,
    ) -> Result<proto::ExplainMembershipResponse, Status> {
        const RPC: &str = "ExplainMembership";
        let proto::ExplainMembershipRequest {
            tenant,
            customer_id,
            segment_ids,
            rule_text,
            as_of,
        } = request;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let customer_id = convert::id(&customer_id, "customer_id")?;
            if segment_ids.len() > MAX_EXPLAINED_SEGMENTS {
                return Err(Error::invalid(
                    "segment_ids",
                    format!(
                        "{} segments, more than the {MAX_EXPLAINED_SEGMENTS} one call explains",
                        segment_ids.len()
                    ),
                ));
            }
            let segment_ids = segment_ids
                .iter()
                .enumerate()
                .map(|(i, id)| convert::id(id, &format!("segment_ids[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            let rule = (!rule_text.trim().is_empty())
                .then(|| convert::parse_rule_text(&rule_text, "rule_text"))
                .transpose()?;
            if segment_ids.is_empty() && rule.is_none() {
                return Err(Error::invalid(
                    "segment_ids",
                    "give at least one segment id, or a rule_text",
                ));
            }
            let instant = convert::instant(as_of.as_ref(), now())?;
            Ok((tenant, customer_id, segment_ids, rule, instant))
        })();
        let (tenant_name, customer_id, segment_ids, rule, instant) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };
        let name = tenant_name.clone();
        let customer = customer_id.clone();
        let memberships = self
            .call(RPC, &tenant_name, move |engine| {
                engine.explain(&name, &customer, &segment_ids, rule.as_ref(), instant)
            })
            .await?;
        Ok(proto::ExplainMembershipResponse {
            customer_id,
            memberships: memberships
                .into_iter()
                .map(|membership| proto::Membership {
                    segment_id: membership.segment_id,
                    member: membership.member,
                    decided_by: match membership.decided_by {
                        Decision::Rule => proto::membership::Decision::Rule,
                        Decision::Included => proto::membership::Decision::Included,
                        Decision::Excluded => proto::membership::Decision::Excluded,
                    } as i32,
                    rule_holds: membership.rule_holds,
                    clauses: membership
                        .clauses
                        .into_iter()
                        .map(|clause| proto::ClauseExplanation {
                            depth: clause.path.len() as u32,
                            path: convert::node_path(&clause.path),
                            rule_text: clause.rule_text,
                            holds: clause.holds,
                            fact: clause.fact,
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    pub(super) async fn list_customer_segments(
        &self,
        request: proto::ListCustomerSegmentsRequest,
    ) -> Result<proto::ListCustomerSegmentsResponse, Status> {
        const RPC: &str = "ListCustomerSegments";
        let proto::ListCustomerSegmentsRequest {
            tenant,
            customer_id,
            as_of,
            show_archived,
        } = request;
        let checked = (|| {
            let (tenant, customer_id) = tenant_and_id(&tenant, &customer_id, "customer_id")?;
            let instant = convert::instant(as_of.as_ref(), now())?;
            Ok((tenant, customer_id, instant))
        })();
        let (tenant_name, customer_id, instant) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };
        let name = tenant_name.clone();
        let segment_ids = self
            .call(RPC, &tenant_name, move |engine| {
                engine.customer_segments(&name, &customer_id, instant, show_archived)
            })
            .await?;
        Ok(proto::ListCustomerSegmentsResponse { segment_ids })
    }

    pub(super) async fn count_overlap(
        &self,
        request: proto::CountOverlapRequest,
    ) -> Result<proto::CountOverlapResponse, Status> {
        const RPC: &str = "CountOverlap";
        let proto::CountOverlapRequest {
            tenant,
            audiences,
            as_of,
        } = request;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            if !(2..=MAX_OVERLAP_AUDIENCES).contains(&audiences.len()) {
                return Err(Error::invalid(
                    "audiences",
                    format!(
                        "{} audiences; give 2 to {MAX_OVERLAP_AUDIENCES}",
                        audiences.len()
                    ),
                ));
            }
            let audiences = audiences
                .into_iter()
                .enumerate()
                .map(|(i, spec)| {
                    convert::audience_at(
                        spec.audience.map(AudienceField::from),
                        &format!("audiences[{i}]."),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let instant = convert::instant(as_of.as_ref(), now())?;
            Ok((tenant, audiences, instant))
        })();
        let (tenant_name, audiences, instant) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };
        let name = tenant_name.clone();
        let overlap = self
            .call(RPC, &tenant_name, move |engine| {
                engine.overlap(&name, &audiences, instant)
            })
            .await?;
        Ok(proto::CountOverlapResponse {
            counts: overlap.counts,
            pairs: overlap
                .pairs
                .into_iter()
                .map(|(first, second, count)| proto::PairOverlap {
                    first: first as u32,
                    second: second as u32,
                    count,
                })
                .collect(),
            intersection_count: overlap.intersection,
            union_count: overlap.union,
        })
    }

    pub(super) async fn diff_audiences(
        &self,
        request: proto::DiffAudiencesRequest,
    ) -> Result<proto::DiffAudiencesResponse, Status> {
        const RPC: &str = "DiffAudiences";
        let proto::DiffAudiencesRequest {
            tenant,
            before,
            after,
            as_of,
            sample_size,
        } = request;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let side = |spec: Option<proto::AudienceSpec>, name: &str| -> Result<Audience> {
                convert::audience_at(
                    spec.and_then(|spec| spec.audience).map(AudienceField::from),
                    &format!("{name}."),
                )
            };
            let before = side(before, "before")?;
            let after = side(after, "after")?;
            let sample = size_of(sample_size, DEFAULT_SAMPLE, MAX_SAMPLE, "sample_size")?;
            let instant = convert::instant(as_of.as_ref(), now())?;
            Ok((tenant, before, after, sample, instant))
        })();
        let (tenant_name, before, after, sample, instant) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };
        let name = tenant_name.clone();
        let diff = self
            .call(RPC, &tenant_name, move |engine| {
                engine.diff(&name, &before, &after, instant, sample)
            })
            .await?;
        Ok(proto::DiffAudiencesResponse {
            before_count: diff.before,
            after_count: diff.after,
            joined_count: diff.joined,
            left_count: diff.left,
            joined_sample: diff.joined_sample,
            left_sample: diff.left_sample,
        })
    }
}

/// A tenant name and one id, checked.
fn tenant_and_id(tenant: &str, id: &str, field: &str) -> Result<(String, String)> {
    Ok((convert::tenant(tenant)?, convert::id(id, field)?))
}

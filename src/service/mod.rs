//! The gRPC face of the engine: each handler validates its request,
//! converts it, runs the engine on a blocking thread, and converts back.

pub mod admin;
pub mod audiences;
pub mod convert;
pub mod rules;
pub mod status;
pub mod token;
pub mod watch;

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use crate::auth::Caller;
use crate::engine::Engine;
use crate::engine::types::Audience;
use crate::error::{Error, Result};
use crate::proto;
use crate::proto::segment_service_server::SegmentService;
use crate::time::Seconds;
use convert::AudienceField;

/// Page size of `ResolveSegment` when the caller gives none.
pub const DEFAULT_PAGE_SIZE: usize = 1_000;
/// Largest page of `ResolveSegment`.
pub const MAX_PAGE_SIZE: usize = 10_000;
/// Page size of `ListSegments` when the caller gives none.
pub const DEFAULT_SEGMENT_PAGE_SIZE: usize = 100;
/// Largest page of `ListSegments`.
pub const MAX_SEGMENT_PAGE_SIZE: usize = 1_000;

/// The segment service over an engine.
#[derive(Clone)]
pub struct Segments {
    engine: Arc<Engine>,
    /// Becomes true when the server stops taking calls: watches end.
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Segments {
    pub fn new(engine: Arc<Engine>) -> Self {
        let (_, stop) = tokio::sync::watch::channel(false);
        Segments { engine, stop }
    }

    /// Ends watches once `stop` becomes true.
    pub fn with_stop(self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        Segments { stop, ..self }
    }

    /// Runs `work` on the engine off the async threads, and logs the call.
    async fn call<T, F>(&self, rpc: &'static str, tenant: &str, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T> + Send + 'static,
    {
        let started = Instant::now();
        let engine = self.engine.clone();
        let crate::gate::CallContext { deadline, slot } = crate::gate::current();
        // Dropped when this call is answered or abandoned, which stops the
        // evaluation at its next clause.
        let (cancel, _abandon_on_drop) = crate::cancel::Cancel::new(deadline);
        let work = tokio::task::spawn_blocking(move || {
            // The call's slot stays taken while this runs, even once the
            // caller has been answered at its deadline or has gone.
            let _slot = slot;
            // A call that waited for a thread past its deadline is not begun.
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(deadline_passed());
            }
            cancel.run(|| work(&engine))
        });
        let finished = match deadline {
            // The evaluation itself runs to its end on its thread; the
            // caller is answered at its deadline.
            Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
                .await
                .unwrap_or_else(|_| Ok(Err(deadline_passed()))),
            None => work.await,
        };
        let outcome = match finished {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if error.is_internal() {
                    tracing::error!(rpc, tenant, error = %error, "internal error");
                }
                Err(Status::from(error))
            }
            Err(join) => {
                tracing::error!(rpc, tenant, error = %join, "handler panicked");
                Err(Status::internal(
                    "internal error; the server log has the details",
                ))
            }
        };
        log_call(rpc, tenant, started, outcome.as_ref().err());
        outcome
    }
}

impl Segments {
    /// Archives or restores a segment, for the two RPCs that differ only in that.
    async fn set_archived(
        &self,
        rpc: &'static str,
        tenant: String,
        segment_id: String,
        archived: bool,
    ) -> Result<crate::store::records::SegmentRecord, Status> {
        let checked = (|| {
            Ok((
                convert::tenant(&tenant)?,
                convert::id(&segment_id, "segment_id")?,
            ))
        })();
        let (tenant_name, segment_id) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(rpc, &tenant, error),
        };
        let name = tenant_name.clone();
        self.call(rpc, &tenant_name, move |engine| {
            if archived {
                engine.archive_segment(&name, &segment_id, now_micros())
            } else {
                engine.unarchive_segment(&name, &segment_id, now_micros())
            }
        })
        .await
    }
}

fn deadline_passed() -> Error {
    Error::DeadlineExceeded("the call's deadline (grpc-timeout) passed".to_owned())
}

/// A request that names the tenant it is about.
pub trait Tenanted {
    fn tenant(&self) -> &str;
}

macro_rules! tenanted {
    ($($request:ident),* $(,)?) => {
        $(impl Tenanted for proto::$request {
            fn tenant(&self) -> &str {
                &self.tenant
            }
        })*
    };
}

tenanted!(
    UpsertCustomersRequest,
    RecordEventsRequest,
    DeleteCustomersRequest,
    MatchCustomersRequest,
    CreateSegmentRequest,
    GetSegmentRequest,
    ListSegmentsRequest,
    UpdateSegmentRequest,
    ArchiveSegmentRequest,
    UnarchiveSegmentRequest,
    CountAudienceRequest,
    ResolveSegmentRequest,
    GetTenantRequest,
    UpdateTenantRequest,
    ExportAudienceRequest,
    CreateSnapshotRequest,
    GetSnapshotRequest,
    ListSnapshotsRequest,
    DeleteSnapshotRequest,
    ExplainMembershipRequest,
    ListCustomerSegmentsRequest,
    CountOverlapRequest,
    DiffAudiencesRequest,
    WatchSegmentChangesRequest,
);

/// The request's message, if its caller may touch the tenant it names;
/// decided before anything else about the request.
fn authorize_tenant<T: Tenanted>(request: Request<T>) -> Result<T, Status> {
    let caller = request.extensions().get::<Caller>().cloned();
    let message = request.into_inner();
    let Some(caller) = caller else {
        // Every route passes the gate; a call that did not is refused.
        tracing::error!("a call reached the segment service without passing the gate");
        return Err(Status::internal(
            "internal error; the server log has the details",
        ));
    };
    if let Err(status) = caller.check_tenant(message.tenant()) {
        let shown: String = message
            .tenant()
            .chars()
            .take(convert::MAX_TENANT_BYTES)
            .collect();
        tracing::info!(
            tenant = shown,
            code = "PERMISSION_DENIED",
            "call refused: another tenant's key"
        );
        return Err(status);
    }
    Ok(message)
}

fn log_call(rpc: &str, tenant: &str, started: Instant, error: Option<&Status>) {
    let micros = started.elapsed().as_micros() as u64;
    match error.map(Status::code) {
        None => tracing::debug!(rpc, tenant, code = "OK", micros, "call"),
        Some(Code::Internal | Code::Unknown | Code::DataLoss) => {
            tracing::error!(rpc, tenant, code = ?error.map(Status::code), micros, "call failed")
        }
        Some(code) => tracing::info!(
            rpc,
            tenant,
            ?code,
            micros,
            message = ?error.map(Status::message),
            "call refused"
        ),
    }
}

/// Refuses a request before any work, logging it like a call. The tenant
/// is not checked yet, so only its start is logged.
fn refuse<T>(rpc: &str, tenant: &str, error: Error) -> Result<T, Status> {
    let status = Status::from(error);
    let shown: String = tenant.chars().take(convert::MAX_TENANT_BYTES).collect();
    log_call(rpc, &shown, Instant::now(), Some(&status));
    Err(status)
}

fn now() -> Seconds {
    chrono::Utc::now().timestamp()
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The key of an audience inside page tokens.
fn audience_key(tenant: &str, audience: &Audience) -> u64 {
    match audience {
        Audience::Rule(rule) => token::fingerprint(&[tenant, "rule", &rule.to_string()]),
        Audience::Segment(segment_id) => token::fingerprint(&[tenant, "segment", segment_id]),
        Audience::Snapshot(snapshot_id) => token::fingerprint(&[tenant, "snapshot", snapshot_id]),
    }
}

#[tonic::async_trait]
impl SegmentService for Segments {
    async fn upsert_customers(
        &self,
        request: Request<proto::UpsertCustomersRequest>,
    ) -> Result<Response<proto::UpsertCustomersResponse>, Status> {
        const RPC: &str = "UpsertCustomers";
        let proto::UpsertCustomersRequest { tenant, customers } = authorize_tenant(request)?;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            convert::batch_size(customers.len(), "customers")?;
            let customers = customers
                .into_iter()
                .enumerate()
                .map(|(i, customer)| convert::customer(customer, &format!("customers[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            Ok((tenant, customers))
        })();
        let (tenant_name, customers) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        let name = tenant_name.clone();
        let summary = self
            .call(RPC, &tenant_name, move |engine| {
                engine.upsert_customers(&name, customers, now())
            })
            .await?;
        Ok(Response::new(proto::UpsertCustomersResponse {
            created_count: summary.created,
            updated_count: summary.updated,
        }))
    }

    async fn record_events(
        &self,
        request: Request<proto::RecordEventsRequest>,
    ) -> Result<Response<proto::RecordEventsResponse>, Status> {
        const RPC: &str = "RecordEvents";
        let proto::RecordEventsRequest { tenant, events } = authorize_tenant(request)?;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            convert::batch_size(events.len(), "events")?;
            let events = events
                .into_iter()
                .enumerate()
                .map(|(i, event)| convert::event(event, &format!("events[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            Ok((tenant, events))
        })();
        let (tenant_name, events) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        let name = tenant_name.clone();
        let summary = self
            .call(RPC, &tenant_name, move |engine| {
                engine.record_events(&name, events, now())
            })
            .await?;
        Ok(Response::new(proto::RecordEventsResponse {
            recorded_count: summary.recorded,
            duplicate_count: summary.duplicates,
        }))
    }

    async fn delete_customers(
        &self,
        request: Request<proto::DeleteCustomersRequest>,
    ) -> Result<Response<proto::DeleteCustomersResponse>, Status> {
        const RPC: &str = "DeleteCustomers";
        let proto::DeleteCustomersRequest {
            tenant,
            customer_ids,
        } = authorize_tenant(request)?;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            convert::batch_size(customer_ids.len(), "customer_ids")?;
            let ids = customer_ids
                .iter()
                .enumerate()
                .map(|(i, id)| convert::id(id, &format!("customer_ids[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            Ok((tenant, ids))
        })();
        let (tenant_name, ids) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        let name = tenant_name.clone();
        let summary = self
            .call(RPC, &tenant_name, move |engine| {
                engine.delete_customers(&name, &ids, now())
            })
            .await?;
        Ok(Response::new(proto::DeleteCustomersResponse {
            deleted_count: summary.deleted,
        }))
    }

    async fn match_customers(
        &self,
        request: Request<proto::MatchCustomersRequest>,
    ) -> Result<Response<proto::MatchCustomersResponse>, Status> {
        const RPC: &str = "MatchCustomers";
        let proto::MatchCustomersRequest { tenant, keys } = authorize_tenant(request)?;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            convert::batch_size(keys.len(), "keys")?;
            let keys = keys
                .into_iter()
                .enumerate()
                .map(|(i, key)| convert::customer_key(key, &format!("keys[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            Ok((tenant, keys))
        })();
        let (tenant_name, keys) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };
        let name = tenant_name.clone();
        let matched = self
            .call(RPC, &tenant_name, move |engine| {
                engine.match_customers(&name, &keys)
            })
            .await?;
        Ok(Response::new(proto::MatchCustomersResponse {
            customer_ids: matched.into_iter().map(Option::unwrap_or_default).collect(),
        }))
    }

    async fn create_segment(
        &self,
        request: Request<proto::CreateSegmentRequest>,
    ) -> Result<Response<proto::CreateSegmentResponse>, Status> {
        const RPC: &str = "CreateSegment";
        let proto::CreateSegmentRequest {
            tenant,
            segment_id,
            segment,
        } = authorize_tenant(request)?;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let segment_id = convert::id(&segment_id, "segment_id")?;
            let segment = segment.ok_or_else(|| Error::invalid("segment", "give the segment"))?;
            let input = convert::segment_input(segment, &segment_id)?;
            Ok((tenant, segment_id, input))
        })();
        let (tenant_name, segment_id, input) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        let name = tenant_name.clone();
        let record = self
            .call(RPC, &tenant_name, move |engine| {
                engine.create_segment(&name, &segment_id, input, now_micros())
            })
            .await?;
        Ok(Response::new(proto::CreateSegmentResponse {
            segment: Some(convert::segment_to_proto(record)),
        }))
    }

    async fn get_segment(
        &self,
        request: Request<proto::GetSegmentRequest>,
    ) -> Result<Response<proto::GetSegmentResponse>, Status> {
        const RPC: &str = "GetSegment";
        let proto::GetSegmentRequest { tenant, segment_id } = authorize_tenant(request)?;
        let checked = (|| {
            Ok((
                convert::tenant(&tenant)?,
                convert::id(&segment_id, "segment_id")?,
            ))
        })();
        let (tenant_name, segment_id) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        let name = tenant_name.clone();
        let record = self
            .call(RPC, &tenant_name, move |engine| {
                engine.get_segment(&name, &segment_id)
            })
            .await?;
        Ok(Response::new(proto::GetSegmentResponse {
            segment: Some(convert::segment_to_proto(record)),
        }))
    }

    async fn list_segments(
        &self,
        request: Request<proto::ListSegmentsRequest>,
    ) -> Result<Response<proto::ListSegmentsResponse>, Status> {
        const RPC: &str = "ListSegments";
        let proto::ListSegmentsRequest {
            tenant,
            page_size,
            page_token,
            show_archived,
            show_counts,
        } = authorize_tenant(request)?;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let page_size =
                page_size_of(page_size, DEFAULT_SEGMENT_PAGE_SIZE, MAX_SEGMENT_PAGE_SIZE)?;
            let key = token::fingerprint(&[
                &tenant,
                "segments",
                if show_archived { "all" } else { "live" },
            ]);
            let after = token::decode_listing(&page_token, key)?;
            Ok((tenant, page_size, key, after))
        })();
        let (tenant_name, page_size, key, after) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        let name = tenant_name.clone();
        let (records, counts, more) = self
            .call(RPC, &tenant_name, move |engine| {
                let (records, more) =
                    engine.list_segments(&name, after.as_deref(), page_size, show_archived)?;
                let counts = if show_counts {
                    let ids: Vec<String> = records
                        .iter()
                        .map(|record| record.segment_id.clone())
                        .collect();
                    engine.segment_counts(&name, &ids, now())?
                } else {
                    Vec::new()
                };
                Ok((records, counts, more))
            })
            .await?;
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => token::encode_listing(key, &last.segment_id),
            _ => String::new(),
        };
        let mut segments: Vec<proto::Segment> =
            records.into_iter().map(convert::segment_to_proto).collect();
        for (segment, (count, sendable)) in segments.iter_mut().zip(counts) {
            segment.member_count = Some(count);
            segment.sendable_count = Some(sendable);
        }
        Ok(Response::new(proto::ListSegmentsResponse {
            segments,
            next_page_token,
        }))
    }

    async fn count_audience(
        &self,
        request: Request<proto::CountAudienceRequest>,
    ) -> Result<Response<proto::CountAudienceResponse>, Status> {
        const RPC: &str = "CountAudience";
        let proto::CountAudienceRequest {
            tenant,
            audience,
            as_of,
            node_counts,
        } = authorize_tenant(request)?;
        let audience = audience.map(AudienceField::from);
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let audience = convert::audience(audience)?;
            let instant = convert::instant(as_of.as_ref(), now())?;
            Ok((tenant, audience, instant))
        })();
        let (tenant_name, audience, instant) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        let rule_text = match &audience {
            Audience::Rule(rule) => rule.to_string(),
            Audience::Segment(_) | Audience::Snapshot(_) => String::new(),
        };
        let name = tenant_name.clone();
        let counts = self
            .call(RPC, &tenant_name, move |engine| {
                engine.count_audience(&name, &audience, instant, node_counts)
            })
            .await?;
        Ok(Response::new(proto::CountAudienceResponse {
            count: counts.count,
            rule_text,
            sendable_count: counts.sendable,
            node_counts: counts
                .nodes
                .into_iter()
                .map(|node| proto::NodeCount {
                    depth: node.path.len() as u32,
                    path: convert::node_path(&node.path),
                    rule_text: node.rule_text,
                    count: node.count,
                })
                .collect(),
        }))
    }

    async fn resolve_segment(
        &self,
        request: Request<proto::ResolveSegmentRequest>,
    ) -> Result<Response<proto::ResolveSegmentResponse>, Status> {
        const RPC: &str = "ResolveSegment";
        let proto::ResolveSegmentRequest {
            tenant,
            audience,
            as_of,
            page_size,
            page_token,
        } = authorize_tenant(request)?;
        let audience = audience.map(AudienceField::from);
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let audience = convert::audience(audience)?;
            let page_size = page_size_of(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
            let key = audience_key(&tenant, &audience);
            let position = token::decode_audience(&page_token, key)?;
            // Later pages keep the first page's instant, so that a moving
            // window does not shift members between pages.
            let instant = match (&as_of, position) {
                (None, Some(position)) => position.instant,
                _ => convert::instant(as_of.as_ref(), now())?,
            };
            let after = position.map(|position| position.after);
            Ok((tenant, audience, instant, page_size, key, after))
        })();
        let (tenant_name, audience, instant, page_size, key, after) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        let name = tenant_name.clone();
        let page = self
            .call(RPC, &tenant_name, move |engine| {
                engine.page(&name, &audience, instant, after, page_size)
            })
            .await?;
        Ok(Response::new(proto::ResolveSegmentResponse {
            customer_ids: page.customer_ids,
            total_count: page.total_count,
            next_page_token: page
                .resume_after
                .map(|after| {
                    token::encode_audience(key, token::AudiencePosition { after, instant })
                })
                .unwrap_or_default(),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<proto::GetTenantRequest>,
    ) -> Result<Response<proto::GetTenantResponse>, Status> {
        const RPC: &str = "GetTenant";
        let proto::GetTenantRequest { tenant } = authorize_tenant(request)?;
        let tenant_name = match convert::tenant(&tenant) {
            Ok(name) => name,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        let name = tenant_name.clone();
        let info = self
            .call(RPC, &tenant_name, move |engine| engine.tenant_info(&name))
            .await?;
        Ok(Response::new(proto::GetTenantResponse {
            tenant: tenant_name,
            time_zone: info.time_zone,
            customer_count: info.customer_count,
            segment_count: info.segment_count,
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<proto::UpdateTenantRequest>,
    ) -> Result<Response<proto::UpdateTenantResponse>, Status> {
        const RPC: &str = "UpdateTenant";
        let proto::UpdateTenantRequest { tenant, time_zone } = authorize_tenant(request)?;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let time_zone = crate::engine::tenants::time_zone(&time_zone, "time_zone")?;
            Ok((tenant, time_zone))
        })();
        let (tenant_name, time_zone) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        let name = tenant_name.clone();
        let info = self
            .call(RPC, &tenant_name, move |engine| {
                engine.set_time_zone(&name, time_zone, now())
            })
            .await?;
        Ok(Response::new(proto::UpdateTenantResponse {
            tenant: tenant_name,
            time_zone: info.time_zone,
            customer_count: info.customer_count,
            segment_count: info.segment_count,
        }))
    }

    async fn update_segment(
        &self,
        request: Request<proto::UpdateSegmentRequest>,
    ) -> Result<Response<proto::UpdateSegmentResponse>, Status> {
        const RPC: &str = "UpdateSegment";
        let proto::UpdateSegmentRequest {
            tenant,
            segment_id,
            segment,
            version,
            update_mask,
        } = authorize_tenant(request)?;
        let checked = (|| {
            let tenant = convert::tenant(&tenant)?;
            let segment_id = convert::id(&segment_id, "segment_id")?;
            if version == 0 {
                return Err(Error::invalid("version", "give the version you read"));
            }
            let segment = segment.ok_or_else(|| Error::invalid("segment", "give the segment"))?;
            let changes = convert::segment_changes(segment, update_mask, &segment_id)?;
            Ok((tenant, segment_id, changes))
        })();
        let (tenant_name, segment_id, changes) = match checked {
            Ok(checked) => checked,
            Err(error) => return refuse(RPC, &tenant, error),
        };

        let name = tenant_name.clone();
        let record = self
            .call(RPC, &tenant_name, move |engine| {
                engine.update_segment(&name, &segment_id, version, changes, now_micros())
            })
            .await?;
        Ok(Response::new(proto::UpdateSegmentResponse {
            segment: Some(convert::segment_to_proto(record)),
        }))
    }

    async fn archive_segment(
        &self,
        request: Request<proto::ArchiveSegmentRequest>,
    ) -> Result<Response<proto::ArchiveSegmentResponse>, Status> {
        let proto::ArchiveSegmentRequest { tenant, segment_id } = authorize_tenant(request)?;
        let record = self
            .set_archived("ArchiveSegment", tenant, segment_id, true)
            .await?;
        Ok(Response::new(proto::ArchiveSegmentResponse {
            segment: Some(convert::segment_to_proto(record)),
        }))
    }

    async fn unarchive_segment(
        &self,
        request: Request<proto::UnarchiveSegmentRequest>,
    ) -> Result<Response<proto::UnarchiveSegmentResponse>, Status> {
        let proto::UnarchiveSegmentRequest { tenant, segment_id } = authorize_tenant(request)?;
        let record = self
            .set_archived("UnarchiveSegment", tenant, segment_id, false)
            .await?;
        Ok(Response::new(proto::UnarchiveSegmentResponse {
            segment: Some(convert::segment_to_proto(record)),
        }))
    }

    type ExportAudienceStream = audiences::ExportStream;

    type WatchSegmentChangesStream = watch::WatchStream;

    async fn watch_segment_changes(
        &self,
        request: Request<proto::WatchSegmentChangesRequest>,
    ) -> Result<Response<Self::WatchSegmentChangesStream>, Status> {
        self.watch(authorize_tenant(request)?).await
    }

    async fn export_audience(
        &self,
        request: Request<proto::ExportAudienceRequest>,
    ) -> Result<Response<Self::ExportAudienceStream>, Status> {
        self.export(authorize_tenant(request)?).await
    }

    async fn create_snapshot(
        &self,
        request: Request<proto::CreateSnapshotRequest>,
    ) -> Result<Response<proto::CreateSnapshotResponse>, Status> {
        Segments::create_snapshot(self, authorize_tenant(request)?)
            .await
            .map(Response::new)
    }

    async fn get_snapshot(
        &self,
        request: Request<proto::GetSnapshotRequest>,
    ) -> Result<Response<proto::GetSnapshotResponse>, Status> {
        Segments::get_snapshot(self, authorize_tenant(request)?)
            .await
            .map(Response::new)
    }

    async fn list_snapshots(
        &self,
        request: Request<proto::ListSnapshotsRequest>,
    ) -> Result<Response<proto::ListSnapshotsResponse>, Status> {
        Segments::list_snapshots(self, authorize_tenant(request)?)
            .await
            .map(Response::new)
    }

    async fn delete_snapshot(
        &self,
        request: Request<proto::DeleteSnapshotRequest>,
    ) -> Result<Response<proto::DeleteSnapshotResponse>, Status> {
        Segments::delete_snapshot(self, authorize_tenant(request)?)
            .await
            .map(Response::new)
    }

    async fn explain_membership(
        &self,
        request: Request<proto::ExplainMembershipRequest>,
    ) -> Result<Response<proto::ExplainMembershipResponse>, Status> {
        Segments::explain_membership(self, authorize_tenant(request)?)
            .await
            .map(Response::new)
    }

    async fn list_customer_segments(
        &self,
        request: Request<proto::ListCustomerSegmentsRequest>,
    ) -> Result<Response<proto::ListCustomerSegmentsResponse>, Status> {
        Segments::list_customer_segments(self, authorize_tenant(request)?)
            .await
            .map(Response::new)
    }

    async fn count_overlap(
        &self,
        request: Request<proto::CountOverlapRequest>,
    ) -> Result<Response<proto::CountOverlapResponse>, Status> {
        Segments::count_overlap(self, authorize_tenant(request)?)
            .await
            .map(Response::new)
    }

    async fn diff_audiences(
        &self,
        request: Request<proto::DiffAudiencesRequest>,
    ) -> Result<Response<proto::DiffAudiencesResponse>, Status> {
        Segments::diff_audiences(self, authorize_tenant(request)?)
            .await
            .map(Response::new)
    }
}

fn page_size_of(requested: u32, default: usize, max: usize) -> Result<usize> {
    size_of(requested, default, max, "page_size")
}

/// A requested size: `default` for zero, refused above `max`.
fn size_of(requested: u32, default: usize, max: usize, field: &str) -> Result<usize> {
    match requested as usize {
        0 => Ok(default),
        size if size > max => Err(Error::invalid(
            field,
            format!("{size} is more than the largest allowed, {max}"),
        )),
        size => Ok(size),
    }
}

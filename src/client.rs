//! What every client command shares: the server to call, the API key to
//! call it with, and the CA to trust when it speaks TLS.

use std::path::PathBuf;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::proto::admin_service_client::AdminServiceClient;
use crate::proto::segment_service_client::SegmentServiceClient;

/// How to reach a server.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The server to call, as host:port or an http:// or https:// URL.
    #[arg(long, env = "SEGMENTD_SERVER", default_value = crate::cli::DEFAULT_SERVER)]
    pub server: String,
    /// The API key to send (`authorization: Bearer ...`), when the server
    /// has keys on: a tenant's key, or the admin key for `segmentd admin`.
    #[arg(long, env = "SEGMENTD_API_KEY", hide_env_values = true)]
    pub api_key: Option<crate::auth::Secret>,
    /// With an https:// server: the PEM certificate of the CA to trust.
    #[arg(long, env = "SEGMENTD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

/// Adds the API key to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type SegmentClient = SegmentServiceClient<InterceptedService<Channel, Bearer>>;
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, Bearer>>;

impl ClientArgs {
    /// A client for the address alone, with no key.
    pub fn plain(server: &str) -> ClientArgs {
        ClientArgs {
            server: server.to_owned(),
            api_key: None,
            ca_cert: None,
        }
    }

    /// The server as a URL.
    pub fn url(&self) -> String {
        if self.server.contains("://") {
            self.server.clone()
        } else {
            format!("http://{}", self.server)
        }
    }

    /// A channel to the server; the error says what went wrong, in words.
    pub async fn channel(&self) -> Result<Channel, String> {
        let url = self.url();
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|_| format!("`{}` is not a host:port address or URL", self.server))?;
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(path) = &self.ca_cert {
                let pem = std::fs::read(path)
                    .map_err(|error| format!("--ca-cert {}: {error}", path.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|error| format!("TLS settings: {error}"))?;
        }
        endpoint.connect().await.map_err(|error| {
            format!(
                "cannot reach {}: {}; is `segmentd serve` running there?",
                self.server,
                crate::import::error_chain(&error)
            )
        })
    }

    fn bearer(&self) -> Result<Bearer, String> {
        let Some(key) = &self.api_key else {
            return Ok(Bearer(None));
        };
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", key.expose().trim())
            .parse()
            .map_err(|_| "--api-key: not a valid header value".to_owned())?;
        // Kept out of HTTP/2's header compression tables.
        value.set_sensitive(true);
        if !self.url().starts_with("https://") && !self.is_loopback() {
            eprintln!(
                "segmentd: warning: sending an API key in plaintext to {}; use an https:// server",
                self.server
            );
        }
        Ok(Bearer(Some(value)))
    }

    /// Whether the server is on this machine (plaintext is fine there).
    fn is_loopback(&self) -> bool {
        let url = self.url();
        let Ok(uri) = url.parse::<http::Uri>() else {
            return false;
        };
        match uri.host() {
            Some("localhost") => true,
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        }
    }

    /// A client of the segment service.
    pub async fn segments(&self) -> Result<SegmentClient, String> {
        let channel = self.channel().await?;
        Ok(
            SegmentServiceClient::with_interceptor(channel, self.bearer()?)
                .max_decoding_message_size(crate::server::MAX_MESSAGE_BYTES),
        )
    }

    /// A client of the admin service.
    pub async fn admin(&self) -> Result<AdminClient, String> {
        let channel = self.channel().await?;
        Ok(AdminServiceClient::with_interceptor(
            channel,
            self.bearer()?,
        ))
    }
}

/// `segmentd health`: whether the server answers SERVING.
pub async fn health(args: crate::cli::HealthArgs) -> Result<bool, String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = args.client.channel().await?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|status| format!("health check: {}: {}", status.code(), status.message()))?;
    let status = ServingStatus::try_from(answer.into_inner().status).unwrap_or_default();
    println!("{}", status.as_str_name());
    Ok(status == ServingStatus::Serving)
}

/// `segmentd watch`: prints each change of the followed segments as
/// `SEQUENCE SEGMENT CAUSE +ENTERED... -LEFT...`, until the stream ends.
pub async fn watch(args: crate::cli::WatchArgs) -> Result<(), String> {
    use std::io::Write;
    let mut client = args.client.segments().await?;
    let mut stream = client
        .watch_segment_changes(crate::proto::WatchSegmentChangesRequest {
            tenant: args.tenant,
            segment_ids: args.segments,
            after_sequence: args.after,
        })
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    let mut last = args.after;
    loop {
        let change = match stream.message().await {
            Ok(Some(change)) => change,
            Ok(None) => return Ok(()),
            Err(status) => {
                let resume =
                    last.map_or_else(String::new, |last| format!(" (resume with --after {last})"));
                return Err(format!("{:?}: {}{resume}", status.code(), status.message()));
            }
        };
        let cause = crate::proto::ChangeCause::try_from(change.cause)
            .map(|cause| {
                cause
                    .as_str_name()
                    .trim_start_matches("CHANGE_CAUSE_")
                    .to_lowercase()
            })
            .unwrap_or_else(|_| change.cause.to_string());
        let mut line = format!("{} {} {cause}", change.sequence, change.segment_id);
        for id in &change.entered_customer_ids {
            line.push_str(" +");
            line.push_str(id);
        }
        for id in &change.left_customer_ids {
            line.push_str(" -");
            line.push_str(id);
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|error| error.to_string())?;
        // Members sent at the start count as processed only once complete.
        let initial = change.cause == crate::proto::ChangeCause::Initial as i32;
        if !initial || change.initial_complete {
            last = Some(change.sequence);
        }
    }
}

/// `segmentd admin ...`: tenants and keys.
pub async fn admin(command: crate::cli::AdminCommand) -> Result<(), String> {
    use crate::cli::AdminCommand;
    use crate::proto;
    let refused = |status: tonic::Status| format!("{}: {}", status.code(), status.message());
    let show = |key: &proto::ApiKey| {
        let revoked = key
            .revoke_time
            .as_ref()
            .map(|t| format!("revoked {}", rfc3339(t)))
            .unwrap_or_else(|| "live".to_owned());
        let created = key.create_time.as_ref().map(rfc3339).unwrap_or_default();
        println!(
            "{}\t{}\tcreated {created}\t{revoked}\t{}",
            key.key_id, key.tenant, key.label
        );
    };
    match command {
        AdminCommand::CreateTenant {
            client,
            tenant,
            time_zone,
        } => {
            let made = client
                .admin()
                .await?
                .create_tenant(proto::CreateTenantRequest { tenant, time_zone })
                .await
                .map_err(refused)?
                .into_inner();
            println!("created tenant {} ({})", made.tenant, made.time_zone);
        }
        AdminCommand::CreateKey {
            client,
            tenant,
            label,
        } => {
            let made = client
                .admin()
                .await?
                .create_api_key(proto::CreateApiKeyRequest { tenant, label })
                .await
                .map_err(refused)?
                .into_inner();
            if let Some(key) = &made.api_key {
                eprintln!(
                    "key {} for tenant {}; it is shown only now:",
                    key.key_id, key.tenant
                );
            }
            println!("{}", made.secret);
        }
        AdminCommand::ListKeys { client, tenant } => {
            let listed = client
                .admin()
                .await?
                .list_api_keys(proto::ListApiKeysRequest {
                    tenant: tenant.unwrap_or_default(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            listed.api_keys.iter().for_each(show);
        }
        AdminCommand::RevokeKey { client, key_id } => {
            let revoked = client
                .admin()
                .await?
                .revoke_api_key(proto::RevokeApiKeyRequest { key_id })
                .await
                .map_err(refused)?
                .into_inner();
            revoked.api_key.iter().for_each(show);
        }
    }
    Ok(())
}

fn rfc3339(t: &prost_types::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

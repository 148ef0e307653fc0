//! `segmentd import` for Shopify customer exports, Klaviyo lists and event
//! files: the real binary against a real server, with fixtures written for
//! these tests (`tests/data/import/`). Every expected figure is counted by
//! hand from the fixture; the comments say which rows make it.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;

use common::TestServer;
use segmentd::proto::{CountAudienceRequest, GetTenantRequest, count_audience_request};
use tonic::Code;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/import")
        .join(name)
}

fn import(server: &TestServer, tenant: &str, format: &str, file: &str, extra: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args(["import", "--tenant", tenant, "--format", format, "--server"])
        .arg(server.addr.to_string())
        .args(extra)
        .arg(fixture(file))
        .output()
        .unwrap()
}

/// Imports and insists on success; returns the summary line.
fn import_ok(
    server: &TestServer,
    tenant: &str,
    format: &str,
    file: &str,
    extra: &[&str],
) -> String {
    let output = import(server, tenant, format, file, extra);
    assert!(
        output.status.success(),
        "import of {file} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn count(server: &TestServer, tenant: &str, rule: &str) -> u64 {
    let request = CountAudienceRequest {
        tenant: tenant.into(),
        audience: Some(count_audience_request::Audience::RuleText(rule.into())),
        ..Default::default()
    };
    let response = server.client().await.count_audience(request).await;
    response
        .unwrap_or_else(|s| panic!("{rule}: {s}"))
        .into_inner()
        .count
}

async fn customers(server: &TestServer, tenant: &str) -> Result<u64, Code> {
    let request = GetTenantRequest {
        tenant: tenant.into(),
    };
    match server.client().await.get_tenant(request).await {
        Ok(response) => Ok(response.into_inner().customer_count),
        Err(status) => Err(status.code()),
    }
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_exports_in_both_header_sets() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;

    let summary = import_ok(
        &server,
        "shop",
        "shopify-customers",
        "shopify-current.csv",
        &[],
    );
    assert!(summary.contains("imported 5 lines"), "{summary}");
    assert!(
        summary.contains("5 customers created, 0 updated"),
        "{summary}"
    );
    // Ann (VIP), Cat (vip) and Dan (VIP in "wholesale,VIP").
    assert_eq!(
        server.members("shop", "tag = \"vip\"").await,
        set(&["8001", "8003", "8004"])
    );
    assert_eq!(count(&server, "shop", "tag = \"summer\"").await, 1);
    // Ann is in CA; Cat's ON is a Canadian province, so no state.
    assert_eq!(
        server.members("shop", "state = \"CA\"").await,
        set(&["8001"])
    );
    assert_eq!(
        server.members("shop", "state IS SET").await,
        set(&["8001", "8002", "8005"])
    );
    // Accepts SMS Marketing: yes for Ann, Cat and Eve; Dan's cell is empty.
    assert_eq!(
        server.members("shop", "opted_in").await,
        set(&["8001", "8003", "8005"])
    );
    // Total Spent 250.00, 99.99, 0.00, (empty), 1200.50.
    assert_eq!(
        server.members("shop", "lifetime_spend > 99.99").await,
        set(&["8001", "8005"])
    );
    assert_eq!(
        server.members("shop", "lifetime_spend IS NOT SET").await,
        set(&["8004"])
    );

    // The older header set has no id: the e-mail, else the phone, names the customer.
    let summary = import_ok(
        &server,
        "shop",
        "shopify-customers",
        "shopify-legacy.csv",
        &[],
    );
    assert!(summary.contains("2 customers created"), "{summary}");
    assert_eq!(
        server.members("shop", "state = \"WA\"").await,
        set(&["fay@example.com"])
    );
    assert_eq!(
        count(&server, "shop", "customer IN (\"12065550106\")").await,
        1
    );
    assert_eq!(customers(&server, "shop").await, Ok(7));

    // Importing again changes nothing: the same customers, updated in place.
    let summary = import_ok(
        &server,
        "shop",
        "shopify-customers",
        "shopify-current.csv",
        &[],
    );
    assert!(
        summary.contains("0 customers created, 5 updated"),
        "{summary}"
    );
    assert_eq!(customers(&server, "shop").await, Ok(7));
    assert_eq!(count(&server, "shop", "tag = \"vip\"").await, 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klaviyo_lists_match_by_id_email_and_phone_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    import_ok(
        &server,
        "shop",
        "shopify-customers",
        "shopify-current.csv",
        &[],
    );
    import_ok(
        &server,
        "shop",
        "shopify-customers",
        "shopify-legacy.csv",
        &[],
    );

    let summary = import_ok(
        &server,
        "shop",
        "klaviyo-list",
        "klaviyo-list.csv",
        &["--list", "KL1"],
    );
    // Ann by e-mail in another case, Gus by phone in another format, Cat by
    // external id; Nia and Ola are new.
    assert!(
        summary.contains("2 customers created, 3 updated"),
        "{summary}"
    );
    assert_eq!(
        server.members("shop", "klaviyo_list = \"KL1\"").await,
        set(&["8001", "12065550106", "8003", "new@example.com", "ext-9"])
    );
    assert_eq!(customers(&server, "shop").await, Ok(9));

    // --replace: the list becomes exactly the file's members.
    let summary = import_ok(
        &server,
        "shop",
        "klaviyo-list",
        "klaviyo-list-replace.csv",
        &["--list", "KL1", "--replace"],
    );
    assert!(summary.contains("4 taken off the list"), "{summary}");
    assert_eq!(
        server.members("shop", "klaviyo_list = \"KL1\"").await,
        set(&["8001", "zed@example.com"])
    );
    assert_eq!(customers(&server, "shop").await, Ok(10));
    // Adding to one list keeps the others.
    import_ok(
        &server,
        "shop",
        "klaviyo-list",
        "klaviyo-list-replace.csv",
        &["--list", "KL2"],
    );
    assert_eq!(
        count(
            &server,
            "shop",
            "klaviyo_list = \"KL1\" AND klaviyo_list = \"KL2\""
        )
        .await,
        2
    );

    let output = import(&server, "shop", "klaviyo-list", "klaviyo-list.csv", &[]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--list"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_files_import_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;

    let summary = import_ok(&server, "shop", "events-jsonl", "events.jsonl", &[]);
    // 7 records (the blank line is no record): 2 customers, 5 events.
    assert!(summary.contains("imported 7 lines"), "{summary}");
    assert!(
        summary.contains("5 events recorded, 0 already present"),
        "{summary}"
    );
    assert_eq!(
        server.members("shop", "ordered").await,
        set(&["8001", "8002"])
    );
    // o-2 is 25.00, o-1 15.00.
    assert_eq!(server.members("shop", "spent >= 20").await, set(&["8002"]));
    assert_eq!(
        server.members("shop", "clicked broadcast \"bf\"").await,
        set(&["8003"])
    );
    assert_eq!(
        server
            .members("shop", "answered(\"quiz\", \"size\", \"Medium\")")
            .await,
        set(&["8003"])
    );
    assert_eq!(
        server
            .members("shop", "messaged AND tag = \"jsonl\" AND opted_in")
            .await,
        set(&["new-1"])
    );
    assert_eq!(
        server
            .members("shop", "timezone = \"America/Los_Angeles\"")
            .await,
        set(&["8001"])
    );

    // Events without an id get one from the file and line: a second import
    // records nothing.
    let summary = import_ok(&server, "shop", "events-jsonl", "events.jsonl", &[]);
    assert!(
        summary.contains("0 events recorded, 5 already present"),
        "{summary}"
    );
    assert_eq!(count(&server, "shop", "order_count = 1").await, 2);
    server.stop().await;
}

/// (stderr, stdout) of an import that must fail.
fn import_fails(server: &TestServer, format: &str, file: &str, extra: &[&str]) -> (String, String) {
    let output = import(server, "bad", format, file, extra);
    assert!(
        !output.status.success(),
        "importing {file} {extra:?} succeeded"
    );
    (
        String::from_utf8_lossy(&output.stderr).into_owned(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_stop_the_import_or_are_skipped_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;

    // shopify-bad.csv: line 3 has consent `maybe`, line 4 the state `ZZ`,
    // line 5 the amount `ten dollars`. One row per batch: line 2 is applied
    // before the import stops at line 3.
    let (stderr, _) = import_fails(
        &server,
        "shopify-customers",
        "shopify-bad.csv",
        &["--batch-size", "1"],
    );
    assert!(
        stderr.contains("line 3") && stderr.contains("maybe"),
        "{stderr}"
    );
    assert_eq!(customers(&server, "bad").await, Ok(1));
    // With the default batch, nothing before the bad line was acknowledged.
    let (stderr, _) = import_fails(&server, "shopify-customers", "shopify-bad.csv", &[]);
    assert!(stderr.contains("with nothing applied"), "{stderr}");

    let (stderr, stdout) = import_fails(
        &server,
        "shopify-customers",
        "shopify-bad.csv",
        &["--skip-bad"],
    );
    assert!(
        stdout.contains("3 bad lines skipped (lines 3, 4, 5)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("line 4") && stderr.contains("ZZ"),
        "{stderr}"
    );
    assert_eq!(
        server
            .members("bad", "customer IN (\"9001\", \"9005\")")
            .await,
        set(&["9001", "9005"])
    );
    assert_eq!(customers(&server, "bad").await, Ok(2));

    // events-bad.jsonl: line 2 is cut short; line 3's event has no time,
    // which the server refuses (`events[1].time`), mapped back to its line.
    let (stderr, stdout) =
        import_fails(&server, "events-jsonl", "events-bad.jsonl", &["--skip-bad"]);
    assert!(
        stdout.contains("2 bad lines skipped (lines 2, 3)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("line 3") && stderr.contains("time"),
        "{stderr}"
    );
    assert_eq!(server.members("bad", "ordered").await, set(&["b1", "b4"]));
    let (stderr, _) = import_fails(&server, "events-jsonl", "events-bad.jsonl", &[]);
    assert!(stderr.contains("events-bad.jsonl, line 2"), "{stderr}");

    // klaviyo-bad.csv: line 3 names nobody.
    let (_, stdout) = import_fails(
        &server,
        "klaviyo-list",
        "klaviyo-bad.csv",
        &["--list", "K", "--skip-bad"],
    );
    assert!(stdout.contains("1 bad lines skipped (lines 3)"), "{stdout}");
    assert_eq!(
        server.members("bad", "klaviyo_list = \"K\"").await,
        set(&["x@example.com", "y@example.com"])
    );

    // A file of another kind is refused at its header.
    let (stderr, _) = import_fails(&server, "shopify-customers", "events.jsonl", &[]);
    assert!(
        stderr.contains("line 1") && stderr.contains("Customer ID"),
        "{stderr}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_stored_before_contacts_were_indexed_are_matched_after_a_restart() {
    use segmentd::proto::{Customer, CustomerKey, MatchCustomersRequest, UpsertCustomersRequest};
    use segmentd::store::keys::{self, ContactKind};
    use segmentd::store::{Batch, Store, encode_json};

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let customer = Customer {
        customer_id: "old".into(),
        email: Some("Old@Example.com".into()),
        ..Customer::default()
    };
    let request = UpsertCustomersRequest {
        tenant: "shop".into(),
        customers: vec![customer],
    };
    server
        .client()
        .await
        .upsert_customers(request)
        .await
        .unwrap();
    server.stop().await;

    // Make the directory look as an older build left it: no contact rows,
    // and a tenant not marked as indexed.
    {
        let store = Store::open(dir.path()).unwrap();
        let mut snapshot = store.load_one("shop").unwrap().unwrap();
        snapshot.meta.contacts_indexed = false;
        let mut batch = Batch::default();
        batch.remove(keys::contact_key(
            "shop",
            ContactKind::Email,
            "old@example.com",
            0,
        ));
        batch.insert(keys::meta_key("shop"), encode_json(&snapshot.meta).unwrap());
        store.commit(batch).unwrap();
        store.flush().unwrap();
    }

    let server = TestServer::start(dir.path()).await;
    let request = MatchCustomersRequest {
        tenant: "shop".into(),
        keys: vec![CustomerKey {
            email: " OLD@example.com".into(),
            ..CustomerKey::default()
        }],
    };
    let matched = server
        .client()
        .await
        .match_customers(request)
        .await
        .unwrap();
    assert_eq!(matched.into_inner().customer_ids, ["old"]);
    server.stop().await;
}

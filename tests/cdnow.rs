//! The CDNOW purchase history loaded through the real `segmentd import`
//! binary into a real server: every count is checked against figures this
//! test computes from the file itself, with a plain reading of the format.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::NaiveDate;
use common::{TestServer, ts};
use segmentd::proto::{
    CountAudienceRequest, ResolveSegmentRequest, count_audience_request, resolve_segment_request,
};

fn data_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/cdnow/CDNOW_master.txt")
}

/// One customer's orders, read straight from the file: (date, cents).
type History = BTreeMap<String, Vec<(NaiveDate, u64)>>;
type Orders = [(NaiveDate, u64)];

fn read_history() -> (History, usize) {
    let text = std::fs::read_to_string(data_file()).unwrap();
    let mut history = History::new();
    let mut lines = 0;
    for line in text.lines().skip(1) {
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns.is_empty() {
            continue;
        }
        lines += 1;
        let date = NaiveDate::parse_from_str(columns[1], "%Y%m%d").unwrap();
        let (dollars, cents) = columns[3].split_once('.').unwrap();
        let value = dollars.parse::<u64>().unwrap() * 100 + cents.parse::<u64>().unwrap();
        history
            .entry(columns[0].to_owned())
            .or_default()
            .push((date, value));
    }
    (history, lines)
}

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

struct Case {
    rule: &'static str,
    as_of: Option<&'static str>,
    expected: BTreeSet<String>,
}

/// The expected members of each rule, from the file alone.
fn cases(history: &History) -> Vec<Case> {
    let select = |keep: &dyn Fn(&Orders) -> bool| -> BTreeSet<String> {
        history
            .iter()
            .filter(|(_, orders)| keep(orders))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let spent = |orders: &[(NaiveDate, u64)]| orders.iter().map(|(_, v)| v).sum::<u64>();
    let ordered_between = |orders: &[(NaiveDate, u64)], a: &str, b: &str| {
        orders.iter().any(|(d, _)| *d >= day(a) && *d <= day(b))
    };
    let first = |orders: &[(NaiveDate, u64)]| orders.iter().map(|(d, _)| *d).min().unwrap();
    vec![
        Case {
            rule: "ordered BETWEEN 1998-01-01 AND 1998-06-30 AND spent >= 100",
            as_of: None,
            expected: select(&|o| {
                ordered_between(o, "1998-01-01", "1998-06-30") && spent(o) >= 10_000
            }),
        },
        Case {
            rule: "spent > 100",
            as_of: None,
            expected: select(&|o| spent(o) > 10_000),
        },
        Case {
            rule: "spent >= 100",
            as_of: None,
            expected: select(&|o| spent(o) >= 10_000),
        },
        Case {
            rule: "order_count >= 3 AND NOT order_count > 10",
            as_of: None,
            expected: select(&|o| o.len() >= 3 && o.len() <= 10),
        },
        Case {
            rule: "order_count = 1",
            as_of: None,
            expected: select(&|o| o.len() == 1),
        },
        Case {
            rule: "spent BETWEEN 50 AND 100.5 OR order_count != 1",
            as_of: None,
            expected: select(&|o| (5_000..=10_050).contains(&spent(o)) || o.len() != 1),
        },
        Case {
            rule: "created BETWEEN 1997-01-01 AND 1997-01-31",
            as_of: None,
            expected: select(&|o| first(o) <= day("1997-01-31")),
        },
        Case {
            rule: "NOT ordered SINCE 1998-01-01",
            as_of: None,
            expected: select(&|o| !o.iter().any(|(d, _)| *d >= day("1998-01-01"))),
        },
        Case {
            // The last 30 calendar days up to noon on the last day of the file.
            rule: "ordered WITHIN 30d",
            as_of: Some("1998-06-30T12:00:00Z"),
            expected: select(&|o| ordered_between(o, "1998-06-01", "1998-06-30")),
        },
        Case {
            // SINCE ends at the instant: orders later than it do not count.
            rule: "ordered SINCE 1998-03-01",
            as_of: Some("1998-03-31T23:59:59Z"),
            expected: select(&|o| ordered_between(o, "1998-03-01", "1998-03-31")),
        },
        Case {
            // Orders sit at 00:00 UTC. 36 hours before noon on 06-30 is exactly
            // 06-29 00:00, and the lower edge of an hour window is exclusive.
            rule: "ordered WITHIN 36h",
            as_of: Some("1998-06-30T12:00:00Z"),
            expected: select(&|o| ordered_between(o, "1998-06-30", "1998-06-30")),
        },
        Case {
            rule: "ordered WITHIN 37h",
            as_of: Some("1998-06-30T12:00:00Z"),
            expected: select(&|o| ordered_between(o, "1998-06-29", "1998-06-30")),
        },
        Case {
            rule: "ordered BEFORE 1997-02-01 AND NOT ordered BETWEEN 1997-02-01 AND 1998-06-30",
            as_of: None,
            expected: select(&|o| {
                o.iter().any(|(d, _)| *d < day("1997-02-01"))
                    && !ordered_between(o, "1997-02-01", "1998-06-30")
            }),
        },
    ]
}

async fn count(server: &TestServer, rule: &str, as_of: Option<&str>) -> u64 {
    let mut client = server.client().await;
    let request = CountAudienceRequest {
        tenant: "cdnow".into(),
        audience: Some(count_audience_request::Audience::RuleText(rule.into())),
        as_of: as_of.map(ts),
        ..Default::default()
    };
    client
        .count_audience(request)
        .await
        .unwrap()
        .into_inner()
        .count
}

/// Pages through a whole audience, checking that no id repeats.
async fn resolve_all(server: &TestServer, rule: &str, page_size: u32) -> BTreeSet<String> {
    let mut client = server.client().await;
    let mut seen = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let request = ResolveSegmentRequest {
            tenant: "cdnow".into(),
            audience: Some(resolve_segment_request::Audience::RuleText(rule.into())),
            as_of: None,
            page_size,
            page_token,
        };
        let page = client.resolve_segment(request).await.unwrap().into_inner();
        assert!(page.customer_ids.len() <= page_size as usize);
        for id in page.customer_ids {
            assert!(seen.insert(id.clone()), "customer {id} came twice");
        }
        if page.next_page_token.is_empty() {
            assert_eq!(seen.len() as u64, page.total_count);
            return seen;
        }
        page_token = page.next_page_token;
    }
}

fn import(server: &TestServer) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args([
            "import", "--tenant", "cdnow", "--format", "cdnow", "--server",
        ])
        .arg(server.addr.to_string())
        .arg(data_file())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdnow_counts_match_the_file_and_survive_restart_and_reimport() {
    let (history, lines) = read_history();
    let cases = cases(&history);
    let dir = tempfile::tempdir().unwrap();

    let server = TestServer::start(dir.path()).await;
    let summary = import(&server);
    assert!(
        summary.contains(&format!("imported {lines} lines into tenant `cdnow`")),
        "unexpected summary: {summary}"
    );
    assert!(summary.contains(&format!("{lines} events recorded, 0 already present")));

    let everyone = count(&server, "order_count >= 0", None).await;
    assert_eq!(everyone, history.len() as u64);
    for case in &cases {
        let got = count(&server, case.rule, case.as_of).await;
        assert_eq!(got, case.expected.len() as u64, "count of `{}`", case.rule);
    }
    let first = &cases[0];
    assert_eq!(resolve_all(&server, first.rule, 500).await, first.expected);
    server.stop().await;

    // The same directory after a restart gives the same answers.
    let server = TestServer::start(dir.path()).await;
    for case in &cases {
        let got = count(&server, case.rule, case.as_of).await;
        assert_eq!(
            got,
            case.expected.len() as u64,
            "after restart, `{}`",
            case.rule
        );
    }

    // Importing the file again changes nothing.
    let summary = import(&server);
    assert!(
        summary.contains(&format!("0 events recorded, {lines} already present")),
        "{summary}"
    );
    for case in &cases {
        let got = count(&server, case.rule, case.as_of).await;
        assert_eq!(
            got,
            case.expected.len() as u64,
            "after re-import, `{}`",
            case.rule
        );
    }
    assert_eq!(resolve_all(&server, first.rule, 1000).await, first.expected);
    server.stop().await;
}

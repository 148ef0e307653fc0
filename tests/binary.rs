//! The `segmentd` binary as an operator runs it: it stops cleanly on
//! SIGTERM and SIGINT, and refuses to serve keyless beyond loopback.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stops_cleanly_on(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    // Give start-up a moment to reach the serving loop; a signal that comes
    // earlier must work too, which the short wait does not hide.
    std::thread::sleep(Duration::from_millis(20));

    let killed = Command::new("kill")
        .args([signal, &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = server.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?} after {signal}: {log}",
        output.status
    );
    assert!(
        log.contains("storage flushed"),
        "no flush in the log: {log}"
    );
}

#[test]
fn serve_exits_zero_after_flushing_on_sigterm() {
    stops_cleanly_on("-TERM");
}

#[test]
fn serve_exits_zero_after_flushing_on_sigint() {
    stops_cleanly_on("-INT");
}

/// Runs `segmentd serve` expecting it to refuse to start; kills it after
/// 30 seconds if it serves instead. Returns its standard error.
fn refused_start(args: &[&str], data: &std::path::Path) -> String {
    let mut server = Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args(["serve"])
        .args(args)
        .arg("--data")
        .arg(data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            server.kill().unwrap();
            panic!("serve started where it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = server.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn serve_refuses_a_non_loopback_address_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refused_start(&["--listen", "0.0.0.0:0"], dir.path());
    assert!(
        stderr.contains("0.0.0.0:0") && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_database_that_is_not_segmentds() {
    let dir = tempfile::tempdir().unwrap();
    {
        let other = sled::open(dir.path()).unwrap();
        other.insert(b"someone else's key", b"value").unwrap();
        other.flush().unwrap();
    }
    let listen = format!("127.0.0.1:{}", free_port());
    let stderr = refused_start(&["--listen", &listen], dir.path());
    assert!(stderr.contains("not a segmentd data directory"), "{stderr}");
}

//! A second `tlsgate run` on an address a running gateway listens on fails to start, names the
//! listener, the address and the OS's reason, and leaves the first gateway serving.

mod lifecycle;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lifecycle::{Lab, Version, curl_result};
use tlsgate_testkit::ChildGuard;

/// How long the second gateway may take to give up.
const FAIL_WITHIN: Duration = Duration::from_secs(30);
/// Requests through the first gateway's edge and relay after the second one failed.
const REQUESTS: usize = 20;

#[test]
fn a_second_gateway_on_a_listening_address_fails_with_the_reason_and_the_first_keeps_serving() {
    let (_runtime, lab) = Lab::on_runtime();
    lab.issue_relay_cert("relay-v1");
    let config = lab.write_config(&Version::default());
    let (first, addrs) = lab.start();

    // The same config: its relay listener (listeners[0]) names the port the first one holds.
    let mut second = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_tlsgate"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .expect("spawn the second tlsgate");
    let deadline = Instant::now() + FAIL_WITHIN;
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait for the second tlsgate") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the second gateway is still running after {FAIL_WITHIN:?}: it bound the first's port"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = second.child_mut().stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
    }
    assert!(!status.success(), "exit status {status}; stderr: {stderr}");
    let binding = format!("listeners[0] (relay): binding {}", addrs["relay"]);
    assert!(
        stderr.contains(&binding),
        "stderr lacks {binding:?}: {stderr}"
    );
    assert!(
        stderr.contains("in use"),
        "stderr lacks the OS's reason: {stderr}"
    );

    // The first gateway still serves.
    for i in 0..REQUESTS {
        let out = lab
            .curl_edge(addrs["edge"], "/", &[])
            .output()
            .expect("run curl");
        assert_eq!(
            curl_result(&out).map(|(status, _)| status),
            Ok(200),
            "request {i} through the first gateway; its log:\n{}",
            lab.log()
        );
    }
    drop(first);
}

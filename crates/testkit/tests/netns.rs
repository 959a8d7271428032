//! Namespace helpers against the real kernel (needs root, like every end-to-end test).

use std::process::Command;
use std::time::Duration;

use tlsgate_testkit::{NetNs, e2e_preflight, unique_prefix, veth};

#[test]
fn veth_link_carries_tcp_and_everything_is_removed_on_drop() {
    match e2e_preflight() {
        Ok(true) => {}
        Ok(false) => return,
        Err(message) => panic!("{message}"),
    }
    let prefix = unique_prefix();
    let a = NetNs::new(&format!("{prefix}a")).expect("namespace a");
    let b = NetNs::new(&format!("{prefix}b")).expect("namespace b");
    veth(
        &a,
        &format!("{prefix}a0"),
        "192.0.2.1/30",
        &b,
        &format!("{prefix}b0"),
        "192.0.2.2/30",
    )
    .expect("veth pair");
    b.set_hosts(&[("192.0.2.1", "peer.example.com")])
        .expect("hosts file");
    let hosts = b.run(&["cat", "/etc/hosts"]).expect("reading hosts in b");
    assert!(hosts.contains("192.0.2.1 peer.example.com"), "{hosts}");

    // Nothing listens on b's port 9: a refused connection (curl exit 7, at once) proves that
    // packets cross the link and come back; an unreachable peer would time out (28).
    let out = a
        .exec(&["curl", "-sS", "--max-time", "5", "http://192.0.2.2:9/"])
        .expect("curl in namespace a");
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut sleeper = b.spawn(&["sleep", "60"]).expect("sleep in b");
    let pid = sleeper.id();
    // `ip netns exec` enters the namespace and then execs: until it has, the kernel does not list
    // the process in b. Poll (bounded) instead of racing it.
    let inside = (0..100).any(|_| {
        let found = b.pids().contains(&pid);
        if !found {
            std::thread::sleep(Duration::from_millis(20));
        }
        found
    });
    assert!(inside, "sleep runs inside namespace b within 2 s");

    let names = [a.name().to_owned(), b.name().to_owned()];
    drop(a);
    drop(b);
    let status = (0..50)
        .find_map(|_| {
            let status = sleeper.try_wait().expect("try_wait");
            if status.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            status
        })
        .expect("the namespace's Drop killed the process inside it");
    assert!(!status.success());
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    for name in names {
        assert!(!list.contains(&name), "{name} still exists: {list}");
        assert!(!std::path::Path::new("/etc/netns").join(&name).exists());
    }
}

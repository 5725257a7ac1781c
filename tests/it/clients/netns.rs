//! A private two-host network for a test: a network namespace joined to the test's own
//! namespace by a veth pair with a /30 from 10.213.0.0/16. A server run inside the
//! namespace is reachable at an address outside 127.0.0.0/8, which is what dockerd needs
//! before it verifies a registry's certificate at all (it treats loopback registries as
//! insecure). Traffic only ever crosses this veth pair: nothing routes the /30 elsewhere.

use std::net::Ipv4Addr;
use std::process::Command;

use super::harness::{require_root, tool};

/// A namespace and its veth pair, both removed on drop (also on a panic).
pub struct NetNs {
    /// `ip netns` name.
    pub name: String,
    /// The test's end of the pair (in the test's namespace).
    host_if: String,
    /// Address of the test's end.
    pub host_ip: Ipv4Addr,
    /// Address of the namespace's end: where a server inside listens.
    pub ns_ip: Ipv4Addr,
}

/// Run `ip ARGS`; panic with its output if it fails.
fn ip(args: &[&str]) {
    let out = Command::new(tool("ip"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip`: {e} (Debian package iproute2)"));
    assert!(
        out.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    pub fn create() -> NetNs {
        require_root("a test with its own network namespace");
        // One /30 per test process, so concurrent runs (and leftovers of a killed run, which
        // make `ip link add` fail loudly rather than share a subnet) never collide. Names stay
        // within the 15-byte interface name limit.
        let pid = std::process::id();
        let block = pid % (1 << 14);
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + block * 4;
        let ns = NetNs {
            name: format!("airdock-{pid}"),
            host_if: format!("adk{pid}h"),
            host_ip: Ipv4Addr::from(base + 1),
            ns_ip: Ipv4Addr::from(base + 2),
        };
        // `ns` exists before the first change, so its Drop undoes whatever part succeeded.
        let ns_if = format!("adk{pid}n");
        let host_cidr = format!("{}/30", ns.host_ip);
        let ns_cidr = format!("{}/30", ns.ns_ip);
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
            "netns",
            &ns.name,
        ]);
        ip(&["addr", "add", &host_cidr, "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ip(&["-n", &ns.name, "addr", "add", &ns_cidr, "dev", &ns_if]);
        ip(&["-n", &ns.name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting either end removes the pair; the namespace goes once its last process
        // (the server, dropped before this) has exited. Errors mean "already gone".
        for args in [
            vec!["link", "del", self.host_if.as_str()],
            vec!["netns", "del", self.name.as_str()],
        ] {
            let _ = Command::new("ip").args(&args).output();
        }
    }
}

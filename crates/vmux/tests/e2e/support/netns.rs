//! Two network namespaces joined by a veth pair, for the tests that need
//! a network beyond loopback (mDNS, a LAN address): multicast stays in
//! there, never on a real interface. Each pair has names and a subnet of
//! its own, so tests in this one process can each have one at once.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Namespaces `a` and `b`, at `a_ip` and `b_ip` on a /24 of their own,
/// removed on drop.
pub struct Netns {
    pub a: String,
    pub b: String,
    pub a_ip: String,
    pub b_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {} (this test needs root and iproute2's ip netns; CI runs as root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    pub fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let subnet = format!("10.77.{}", n % 250);
        let net = Netns {
            a: format!("vmux{tag}a"),
            b: format!("vmux{tag}b"),
            a_ip: format!("{subnet}.1"),
            b_ip: format!("{subnet}.2"),
        };
        // Interface names stay under 16 bytes: "vxa" + 5 + 1 + digits.
        let (va, vb) = (format!("vxa{tag}"), format!("vxb{tag}"));
        ip(&["netns", "add", &net.a]);
        ip(&["netns", "add", &net.b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &net.a]);
        ip(&["link", "set", &vb, "netns", &net.b]);
        for (ns, dev, addr) in [(&net.a, &va, &net.a_ip), (&net.b, &vb, &net.b_ip)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up", "multicast", "on"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        net
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

//! Local discovery over mDNS, only inside two network namespaces this
//! test makes (joined by a veth pair), never on a real interface.

use crate::support::netns::Netns;
use crate::support::*;

#[test]
fn the_agent_finds_its_signer_with_no_address_and_ignores_an_impostor() {
    let net = Netns::new();
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "kitchen-pi");
    let line = signer.keygen("ed25519", "found-by-mdns");
    signer.launch.netns = Some(net.b.clone());
    signer.start_on("0.0.0.0:0", &[]);

    let mut agent = Agent::new(dir.path(), "laptop");
    agent.launch.netns = Some(net.a.clone());
    agent.start(&[]);
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("discovered signer kitchen-pi"));
    agent.wait_connected(1);
    let pairs = signer.approvals_of("pair");
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    let listed = String::from_utf8_lossy(&agent.ssh_add(&["-L"]).stdout).into_owned();
    assert!(
        listed.contains(line.split_whitespace().nth(1).unwrap()),
        "{listed}"
    );

    // An unpaired impostor appears; the agent, which has a pinned signer
    // now, sees it and leaves it alone.
    let mut impostor = Signer::init(dir.path(), "impostor");
    impostor.keygen("ed25519", "evil");
    impostor.launch.netns = Some(net.b.clone());
    impostor.start_on("0.0.0.0:0", &[]);
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("discovered signer impostor"));
    // Restart the agent: with its pin it reconnects to the real signer
    // only, found again by mDNS.
    agent.stop();
    agent.start(&[]);
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("connected to signer kitchen-pi"));
    agent
        .daemon()
        .wait_line(WAIT, |l| l.contains("discovered signer impostor"));
    assert!(
        impostor.approvals_of("pair").is_empty(),
        "the impostor was never asked to pair"
    );
    assert_eq!(
        agent
            .daemon()
            .count(|l| l.contains("connected to signer impostor")),
        0
    );
    let listed = String::from_utf8_lossy(&agent.ssh_add(&["-L"]).stdout).into_owned();
    assert!(!listed.contains("evil"), "{listed}");
}

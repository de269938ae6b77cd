//! Local discovery over mDNS, only inside two network namespaces this
//! test makes (joined by a veth pair), never on a real interface.

use crate::support::netns::Netns;
use crate::support::*;

#[test]
fn the_agent_finds_its_signer_with_no_address_and_ignores_an_impostor() {
    let net = Netns::new();
    let dir = test_dir();
    let (signer, line) = Signer::serving_in(dir.path(), &net.b, "kitchen-pi", "found-by-mdns");

    let mut agent = Agent::in_namespace(dir.path(), &net.a, "laptop");
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
    let (impostor, _) = Signer::serving_in(dir.path(), &net.b, "impostor", "evil");
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

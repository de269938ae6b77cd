//! `--approve phone`: every decision becomes a card on the phone page,
//! and only a phone's passkey assertion over that exact request approves
//! it (`vmux-phone` checks it; this file turns decisions into cards and
//! answers into verdicts).

use std::sync::Arc;
use std::time::Duration;

use vmux_phone::{Answer, Ask, Desk, Headline, Mark, MarkLevel, WindowOffer};

use super::{sanitize, Approver, Decision, DecisionKind, Verdict};
use crate::purpose::Purpose;

/// Asks the phones through the page's desk.
pub struct PhoneApprover {
    desk: Arc<Desk>,
}

impl PhoneApprover {
    /// An approver that puts each decision on `desk`.
    pub fn new(desk: Arc<Desk>) -> PhoneApprover {
        PhoneApprover { desk }
    }
}

impl Approver for PhoneApprover {
    async fn decide(&self, decision: &Decision, timeout: Duration) -> Verdict {
        self.decide_attributed(decision, timeout).await.0
    }

    async fn decide_attributed(
        &self,
        decision: &Decision,
        timeout: Duration,
    ) -> (Verdict, Option<String>) {
        match self.desk.ask(ask_of(decision), timeout).await {
            Answer::Approved { phone, window, .. } => (
                match window {
                    Some(s) => Verdict::ApproveFor(Duration::from_secs(s)),
                    None => Verdict::Approve,
                },
                Some(phone),
            ),
            Answer::Denied { phone } => (Verdict::Deny, Some(phone)),
            Answer::TimedOut | Answer::Refused => (Verdict::TimedOut, None),
        }
    }
}

/// "1 h", "10 min", "45 s".
pub(crate) fn duration_text(s: u64) -> String {
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// What a person reads first on the card and in the notification, from the
/// decision's structured fields (never its summary); every peer-chosen
/// part stripped of control and invisible characters.
pub fn headline_of(d: &Decision) -> Headline {
    let agent = sanitize(&d.source().name);
    let mut marks = Vec::new();
    let (action, key, program) = match d {
        Decision::Pair(_) => (
            "pair with this signer".to_owned(),
            String::new(),
            String::new(),
        ),
        Decision::Certificate(c) => (
            format!(
                "a certificate for {} as {}",
                duration_text(c.validity_seconds),
                sanitize(&c.principals.join(", "))
            ),
            String::new(),
            String::new(),
        ),
        Decision::Sign(s) => {
            let named = s
                .claims
                .dest_host
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .find(|h| !h.is_empty())
                // The agent's word for a host its known_hosts does not name.
                .map(|h| match h {
                    "unknown host" => "a host not in known_hosts".to_owned(),
                    h => sanitize(h),
                });
            let action = match &s.purpose {
                Purpose::VerifiedLogin(v) => {
                    marks.push(Mark::new(MarkLevel::Ok, "host key verified"));
                    let host = named.unwrap_or_else(|| "a host".to_owned());
                    format!("log in to {host} as {}", sanitize(v.user()))
                }
                Purpose::Login { user } => {
                    marks.push(Mark::new(MarkLevel::Warn, "unverified host: not checked"));
                    format!("log in to an unverified host as {}", sanitize(user))
                }
                Purpose::Sshsig { namespace } => match namespace.as_str() {
                    "git" => "sign a git commit".to_owned(),
                    "file" => "sign a file".to_owned(),
                    other => format!("sign {}", sanitize(other)),
                },
                Purpose::Unknown => {
                    marks.push(Mark::new(MarkLevel::Warn, "unknown data"));
                    "sign unknown data".to_owned()
                }
            };
            if s.claims.forwarded {
                marks.insert(
                    0,
                    Mark::new(MarkLevel::Danger, "FORWARDED: a remote machine asks"),
                );
            } else if s.purpose.forwarding_unknown(false) {
                marks.push(Mark::new(MarkLevel::Warn, "forwarding unknown"));
            }
            let action = match &s.purpose {
                Purpose::Sshsig { .. } | Purpose::Unknown => {
                    format!("{action} with {}", sanitize(&s.key_comment))
                }
                _ => action,
            };
            let exe = match (&s.claims.executable, &s.claims.process) {
                (Some(e), _) => e.as_str(),
                (None, Some(p)) => p.split_whitespace().next().unwrap_or(""),
                (None, None) => "",
            };
            let program = exe.rsplit('/').next().unwrap_or("");
            (action, sanitize(&s.key_comment), sanitize(program))
        }
    };
    let wants = match d {
        Decision::Certificate(_) => "wants",
        _ => "wants to",
    };
    let mut question: String = action.clone();
    if let Some(first) = question.get(..1) {
        question = first.to_uppercase() + &question[1..];
    }
    Headline {
        text: format!("{agent} {wants} {action}"),
        question: format!("{question}?"),
        agent,
        key,
        program,
        marks,
    }
}

/// `ask` made the card of `phone` alone whose passkey assertion over
/// `data` is itself the signature, so no approval window is offered:
/// `mark` on its headline and the fact `(label, text)` say what approving
/// makes.
pub fn passkey_card(
    mut ask: Ask,
    phone: &str,
    data: Vec<u8>,
    mark: &str,
    (label, text): (&str, &str),
) -> Ask {
    ask.headline.marks.push(Mark::new(MarkLevel::Info, mark));
    ask.facts.push((label.to_owned(), text.to_owned()));
    ask.window = None;
    ask.challenge = vmux_phone::ChallengeKind::Data(data);
    ask.only_phone = Some(phone.to_owned());
    ask
}

/// The card for a decision: the same facts every approver gets, as text.
pub fn ask_of(d: &Decision) -> Ask {
    let src = d.source();
    let agent = format!("{} ({})", sanitize(&src.name), sanitize(&src.id));
    let mut facts = vec![("Agent".to_owned(), agent)];
    let (kind, title, key, code, window) = match d {
        Decision::Pair(p) => {
            facts.push(("Code".into(), sanitize(&p.code)));
            (
                DecisionKind::Pair,
                "Pair a new agent?".to_owned(),
                String::new(),
                Some(sanitize(&p.code)),
                None,
            )
        }
        Decision::Certificate(c) => {
            facts.push(("Valid for".into(), duration_text(c.validity_seconds)));
            facts.push(("Principals".into(), sanitize(&c.principals.join(", "))));
            (
                DecisionKind::Certificate,
                "Issue a session certificate?".to_owned(),
                String::new(),
                None,
                None,
            )
        }
        Decision::Sign(s) => {
            facts.push((
                "Key".into(),
                format!(
                    "{} {}",
                    sanitize(&s.key_comment),
                    sanitize(&s.key_fingerprint)
                ),
            ));
            match &s.purpose {
                Purpose::VerifiedLogin(v) => {
                    facts.push(("Log in as".into(), sanitize(v.user())));
                    facts.push((
                        "Host key".into(),
                        format!("{} [verified]", v.host_key_fingerprint()),
                    ));
                }
                Purpose::Login { user } => {
                    facts.push(("Log in as".into(), sanitize(user)));
                    facts.push(("Host".into(), "not proven [claimed]".into()));
                }
                Purpose::Sshsig { namespace } => {
                    facts.push(("Signature".into(), "ssh-keygen, not a login".into()));
                    facts.push(("Namespace".into(), sanitize(namespace)));
                }
                Purpose::Unknown => facts.push((
                    "Data".into(),
                    "neither a login nor an ssh-keygen signature [unknown]".into(),
                )),
            }
            for (label, claim) in [
                ("The agent names it", &s.claims.dest_host),
                ("Process", &s.claims.process),
                ("Program", &s.claims.executable),
            ] {
                if let Some(c) = claim {
                    facts.push((label.into(), sanitize(c)));
                }
            }
            if s.claims.forwarded {
                facts.push(("Forwarded".into(), "yes: through a forwarded agent".into()));
            } else if s.purpose.forwarding_unknown(false) {
                facts.push((
                    "Forwarded".into(),
                    "unknown: the client did not bind its session".into(),
                ));
            }
            let title = if s.claims.forwarded {
                "Signature through a FORWARDED agent"
            } else {
                "SSH signature requested"
            };
            let window = (s.window_max_seconds > 0 && !s.claims.forwarded).then(|| WindowOffer {
                seconds: s.window_max_seconds,
                label: format!(
                    "Also allow this host, user and program for {}",
                    duration_text(s.window_max_seconds)
                ),
            });
            (
                DecisionKind::Sign,
                title.to_owned(),
                s.key_fingerprint.clone(),
                None,
                window,
            )
        }
    };
    Ask {
        kind,
        agent_id: src.id.clone(),
        title,
        headline: headline_of(d),
        summary: d.summary(),
        facts,
        forwarded: d.forwarded(),
        code,
        key_fingerprint: key,
        body: d.approval_body(),
        window,
        challenge: vmux_phone::ChallengeKind::Approval,
        only_phone: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approver::{Claims, SignDecision, SignedData, Source};

    fn sign(forwarded: bool, window: u64) -> Decision {
        Decision::Sign(SignDecision {
            source: Source {
                name: "laptop\u{202e}".into(),
                id: "abcd".into(),
            },
            key_fingerprint: "SHA256:xyz".into(),
            key_comment: "work".into(),
            purpose: Purpose::Sshsig {
                namespace: "git".into(),
            },
            claims: Claims {
                forwarded,
                ..Default::default()
            },
            window_max_seconds: window,
            data: SignedData(b"data".to_vec()),
        })
    }

    #[test]
    fn approval_bodies_test_vectors() {
        // docs/PROTOCOL.md section 12.
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let src = Source {
            name: "laptop".into(),
            id: "0123456789abcdef".into(),
        };
        let pair = Decision::Pair(crate::approver::PairDecision {
            source: src.clone(),
            code: "123456".into(),
        });
        assert_eq!(hex(ask_of(&pair).body), "00000006313233343536");
        let mut blob = hex::decode_for_test("0000000b7373682d6564323535313900000020");
        blob.extend([0x11; 32]);
        let cert = Decision::Certificate(crate::approver::CertDecision {
            source: src,
            validity_seconds: 28800,
            principals: vec!["root".into(), "git".into()],
            public_key_blob: blob,
        });
        assert_eq!(
            hex(ask_of(&cert).body),
            "000000330000000b7373682d6564323535313900000020111111111111111111111111111111111111111111111111111111111111111100000008000000000000708000000004726f6f7400000003676974"
        );
    }

    mod hex {
        pub fn decode_for_test(s: &str) -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        }
    }

    #[test]
    fn cards_say_what_the_approvers_say_and_forwarded_gets_no_window() {
        let a = ask_of(&sign(false, 3600));
        assert_eq!(a.kind, DecisionKind::Sign);
        assert_eq!(
            a.facts[0],
            ("Agent".to_owned(), "laptop? (abcd)".to_owned())
        );
        assert!(a.window.as_ref().unwrap().label.ends_with("for 1 h"));
        assert_eq!(a.body, sign(false, 3600).approval_body());
        let f = ask_of(&sign(true, 3600));
        assert!(f.forwarded);
        assert!(f.window.is_none());
        assert!(f.title.contains("FORWARDED"));
    }

    #[test]
    fn headlines_say_who_wants_what_from_the_decisions_fields() {
        let with = |purpose: Purpose, forwarded: bool| {
            let Decision::Sign(mut d) = sign(forwarded, 0) else {
                unreachable!()
            };
            d.purpose = purpose;
            d.claims.dest_host = Some("devbox,10.0.0.7".into());
            d.claims.executable = Some("/usr/bin/ssh\u{7}".into());
            d.claims.process = Some("ssh -F /dev/null -o X devbox".into());
            headline_of(&Decision::Sign(d))
        };
        // Not proven: the agent's name for the host is not the headline's.
        let h = with(
            Purpose::Login {
                user: "root".into(),
            },
            false,
        );
        assert_eq!(
            h.text,
            "laptop? wants to log in to an unverified host as root"
        );
        assert_eq!(h.question, "Log in to an unverified host as root?");
        assert_eq!((h.agent.as_str(), h.key.as_str()), ("laptop?", "work"));
        assert_eq!(h.program, "ssh?", "the program's name, controls stripped");
        assert_eq!(h.marks[0].level, MarkLevel::Warn);
        assert!(h.marks[0].text.starts_with("unverified host"));
        // Forwarded stands out first, in words.
        let h = with(
            Purpose::Login {
                user: "root".into(),
            },
            true,
        );
        assert_eq!(h.marks[0].level, MarkLevel::Danger);
        assert!(h.marks[0].text.contains("FORWARDED"));
        // ssh-keygen: the namespace in words, the key in the sentence.
        let ns = |n: &str| {
            with(
                Purpose::Sshsig {
                    namespace: n.into(),
                },
                false,
            )
        };
        assert_eq!(
            ns("git").text,
            "laptop? wants to sign a git commit with work"
        );
        assert_eq!(ns("git").question, "Sign a git commit with work?");
        assert_eq!(ns("file").text, "laptop? wants to sign a file with work");
        assert_eq!(
            ns("backup@example.com\u{202e}").text,
            "laptop? wants to sign backup@example.com? with work"
        );
        let h = with(Purpose::Unknown, false);
        assert_eq!(h.text, "laptop? wants to sign unknown data with work");
        assert!(h.marks.iter().any(|m| m.text == "unknown data"));
        // No fingerprint, no command line anywhere in it.
        for h in [with(Purpose::Unknown, true), ns("git")] {
            let all = format!(
                "{} {} {} {} {}",
                h.text, h.question, h.agent, h.key, h.program
            );
            assert!(!all.contains("SHA256") && !all.contains("-F"), "{all}");
        }
        // Certificates and pairings.
        let src = Source {
            name: "laptop".into(),
            id: "abcd".into(),
        };
        let cert = Decision::Certificate(crate::approver::CertDecision {
            source: src.clone(),
            validity_seconds: 8 * 3600,
            principals: vec!["anna".into()],
            public_key_blob: Vec::new(),
        });
        let h = headline_of(&cert);
        assert_eq!(h.text, "laptop wants a certificate for 8 h as anna");
        assert_eq!(h.question, "A certificate for 8 h as anna?");
        let pair = Decision::Pair(crate::approver::PairDecision {
            source: src,
            code: "123456".into(),
        });
        assert_eq!(
            headline_of(&pair).text,
            "laptop wants to pair with this signer"
        );
        assert_eq!(ask_of(&pair).headline, headline_of(&pair));
    }
}

//! A tailnet, when this machine is on one: `tailscale status --json`
//! says whether MagicDNS and HTTPS certificates are on, and `tailscale
//! cert` writes a publicly trusted certificate for this machine's tailnet
//! name, so the phone page needs no trust step and works away from home.
//!
//! Renewal: tailscale's certificates last about 90 days and `tailscale
//! cert` fetches a new one once the old one nears its end (it returns the
//! cached one before). `vmux setup` runs it again daily from a systemd
//! user timer (or prints a crontab line where there is no user manager);
//! the signer reloads the changed files by itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::Failure;

/// What `tailscale status --json` offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// This machine's tailnet name, without the trailing dot.
    pub name: String,
}

/// Reads `tailscale status --json`: an offer when tailscale runs, MagicDNS
/// is on and this machine's name is among the HTTPS certificate domains.
/// No tailscale (or one that says anything else) is no offer.
pub fn offer() -> Option<Offer> {
    let out = Command::new("tailscale")
        .args(["status", "--json"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse(&serde_json::from_slice(&out.stdout).ok()?)
}

fn parse(status: &Value) -> Option<Offer> {
    if status["BackendState"].as_str() != Some("Running") {
        return None;
    }
    if status["CurrentTailnet"]["MagicDNSEnabled"].as_bool() != Some(true) {
        return None;
    }
    let name = status["Self"]["DNSName"]
        .as_str()?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let domains = status["CertDomains"].as_array()?;
    let listed = domains
        .iter()
        .filter_map(Value::as_str)
        .any(|d| d.trim_end_matches('.').eq_ignore_ascii_case(&name));
    (listed && !name.is_empty()).then_some(Offer { name })
}

/// Where the certificate and key for `name` go.
pub fn files(state_dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        state_dir.join(format!("tailscale-{name}.crt")),
        state_dir.join(format!("tailscale-{name}.key")),
    )
}

/// The `tailscale cert` command line that writes (or renews) them.
pub fn cert_args(name: &str, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        "cert".into(),
        "--cert-file".into(),
        cert.display().to_string(),
        "--key-file".into(),
        key.display().to_string(),
        name.into(),
    ]
}

/// Runs `tailscale cert` for `name` and makes the key owner-only.
pub fn fetch_cert(name: &str, cert: &Path, key: &Path) -> Result<(), Failure> {
    let out = Command::new("tailscale")
        .args(cert_args(name, cert, key))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Failure(format!("cannot run tailscale cert: {e}")))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(Failure(format!(
            "tailscale cert {name} failed ({}); as a user other than root it needs `sudo tailscale set --operator=$USER` once",
            vmux_proto::sanitize(why.trim())
        )));
    }
    if !cert.exists() || !key.exists() {
        return Err(Failure(format!(
            "tailscale cert {name} wrote no certificate at {}",
            cert.display()
        )));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Failure(format!("cannot chmod 600 {}: {e}", key.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(magic: bool, domains: Value) -> Value {
        json!({
            "BackendState": "Running",
            "Self": { "DNSName": "Laptop.tail1234.ts.net.", "TailscaleIPs": ["100.64.0.7"] },
            "CurrentTailnet": { "Name": "anna@example.com", "MagicDNSSuffix": "tail1234.ts.net", "MagicDNSEnabled": magic },
            "CertDomains": domains,
        })
    }

    #[test]
    fn offers_the_name_only_with_magicdns_and_certificates() {
        assert_eq!(
            parse(&status(true, json!(["laptop.tail1234.ts.net"]))),
            Some(Offer {
                name: "laptop.tail1234.ts.net".into()
            })
        );
        assert_eq!(
            parse(&status(false, json!(["laptop.tail1234.ts.net"]))),
            None
        );
        assert_eq!(parse(&status(true, json!([]))), None);
        assert_eq!(parse(&status(true, Value::Null)), None);
        assert_eq!(parse(&status(true, json!(["other.tail1234.ts.net"]))), None);
        let mut stopped = status(true, json!(["laptop.tail1234.ts.net"]));
        stopped["BackendState"] = json!("Stopped");
        assert_eq!(parse(&stopped), None);
    }
}

//! Local discovery over mDNS/DNS-SD: signers advertise
//! `_vmuxsigner._tcp.local.` with a TXT record holding their id and the
//! protocol version (nothing secret); agents browse for it. Discovery
//! only finds addresses: who a signer is, is proven by its pinned key on
//! connection.

use std::net::SocketAddr;

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use vmux_proto::PROTOCOL_VERSION;

/// The DNS-SD service type.
pub const SERVICE_TYPE: &str = "_vmuxsigner._tcp.local.";

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[error("local discovery (mDNS) failed: {0}")]
pub struct DiscoveryError(String);

fn err(e: impl std::fmt::Display) -> DiscoveryError {
    DiscoveryError(e.to_string())
}

/// Whether `id` looks like a device id (20 lowercase hex digits).
pub fn valid_id(id: &str) -> bool {
    id.len() == 20 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A DNS-SD instance label from a signer's display name: printable, at
/// most 63 bytes, never empty.
pub fn instance_name(name: &str) -> String {
    let mut out: String = vmux_proto::sanitize(name)
        .chars()
        .filter(|c| *c != '.' && *c != '\\')
        .collect();
    while out.len() > 63 {
        out.pop();
    }
    if out.trim().is_empty() {
        "vmux signer".to_owned()
    } else {
        out
    }
}

/// The DNS-SD type the phone page is announced as.
pub const PAGE_SERVICE_TYPE: &str = "_https._tcp.local.";

/// A signer advertising itself; stops when dropped.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
    page: Option<String>,
}

impl Advertiser {
    /// Advertises signer `id` named `name` on `port`, on every interface.
    pub fn start(name: &str, id: &str, port: u16) -> Result<Advertiser, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(err)?;
        let host = format!("vmux-{id}.local.");
        let version = PROTOCOL_VERSION.to_string();
        let props = [("id", id), ("v", version.as_str())];
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &instance_name(name),
            &host,
            "",
            port,
            &props[..],
        )
        .map_err(err)?
        .enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        daemon.register(info).map_err(err)?;
        Ok(Advertiser {
            daemon,
            fullname,
            page: None,
        })
    }

    /// Also announces the phone page as `_https._tcp` on `port` with the
    /// host name `host` (a `.local` name such as `HOSTNAME.local`), so
    /// that this responder answers `host`'s address queries: with `ip`,
    /// or every interface's addresses when `ip` is unspecified.
    pub fn announce_page(
        &mut self,
        name: &str,
        host: &str,
        ip: std::net::IpAddr,
        port: u16,
    ) -> Result<(), DiscoveryError> {
        let host = format!("{}.", host.trim_end_matches('.'));
        let instance = instance_name(&format!("vmux phone page {name}"));
        let info = if ip.is_unspecified() {
            ServiceInfo::new(PAGE_SERVICE_TYPE, &instance, &host, "", port, None)
                .map_err(err)?
                .enable_addr_auto()
        } else {
            ServiceInfo::new(PAGE_SERVICE_TYPE, &instance, &host, ip, port, None).map_err(err)?
        };
        let fullname = info.get_fullname().to_owned();
        self.daemon.register(info).map_err(err)?;
        self.page = Some(fullname);
        Ok(())
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        if let Some(page) = &self.page {
            let _ = self.daemon.unregister(page);
        }
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

/// A signer seen on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its id (from the TXT record; proven only by its key on connection).
    pub id: String,
    /// Its advertised name.
    pub name: String,
    /// Where to connect.
    pub addresses: Vec<SocketAddr>,
}

/// Browses for signers.
pub struct Browser {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
}

impl Browser {
    /// Starts browsing on every interface.
    pub fn start() -> Result<Browser, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(err)?;
        let events = daemon.browse(SERVICE_TYPE).map_err(err)?;
        Ok(Browser { daemon, events })
    }

    /// The next signer seen (with a well-formed id and our protocol
    /// version), or `None` when browsing stopped.
    pub async fn next(&mut self) -> Option<Found> {
        loop {
            match self.events.recv_async().await.ok()? {
                ServiceEvent::ServiceResolved(info) => {
                    let id = info.get_property_val_str("id").unwrap_or("").to_owned();
                    let version = info.get_property_val_str("v").unwrap_or("");
                    if !valid_id(&id) || version != PROTOCOL_VERSION.to_string() {
                        continue;
                    }
                    let name = info
                        .fullname
                        .strip_suffix(SERVICE_TYPE)
                        .unwrap_or(&info.fullname)
                        .trim_end_matches('.')
                        .to_owned();
                    let mut addresses: Vec<SocketAddr> = info
                        .get_addresses()
                        .iter()
                        .map(|a| SocketAddr::new(a.to_ip_addr(), info.get_port()))
                        .collect();
                    // IPv4 first: link-local IPv6 needs a scope to connect.
                    addresses.sort_by_key(|a| !a.is_ipv4());
                    return Some(Found {
                        id,
                        name,
                        addresses,
                    });
                }
                ServiceEvent::SearchStopped(_) => return None,
                _ => continue,
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert!(valid_id("0123456789abcdef0123"));
        assert!(!valid_id("0123456789ABCDEF0123"));
        assert!(!valid_id("short"));
        assert_eq!(instance_name("pi.local\x1b[31m"), "pilocal?[31m");
        assert_eq!(instance_name(""), "vmux signer");
        assert!(instance_name(&"x".repeat(100)).len() <= 63);
    }
}

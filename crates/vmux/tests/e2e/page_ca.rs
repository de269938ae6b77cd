//! The phone page's own CA (no `--tls-cert`): the signer makes a CA whose
//! critical name constraints permit only the page's name, serves a leaf
//! for that name, renews it under the same CA, and hands the CA to a
//! phone through a one-time plain-HTTP trust link. A real Chromium whose
//! NSS database trusts nothing but the `.crt` it downloaded from that
//! link enrols a passkey on the page.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::browser::{Authenticator, Browser};
use crate::support::netns::Netns;
use crate::support::phone::{download_page_ca, enrol, RP_HOST};
use crate::support::*;

/// `signer run` with the page on 127.0.0.1 under `RP_HOST` and the
/// signer's own CA; returns the page's origin.
fn start_own_ca(signer: &mut Signer, approve: &str) -> String {
    signer.start_approving(
        "127.0.0.1:0",
        approve,
        &["--web-listen", "127.0.0.1:0", "--web-name", RP_HOST],
    );
    let line = signer
        .daemon()
        .wait_line(WAIT, |l| l.starts_with("phone page at "));
    let origin = line["phone page at ".len()..].to_owned();
    assert!(
        origin.starts_with(&format!("https://{RP_HOST}:")),
        "the origin follows from --web-name and the port: {origin}"
    );
    origin
}

/// What `vmux signer phone add --name NAME` printed.
struct Added {
    enrol: String,
    trust: String,
    stderr: String,
}

fn phone_add(signer: &Signer, name: &str) -> Added {
    phone_add_at(signer, name, "http://127.0.0.1:")
}

/// The same, the trust link starting with `trust_prefix`.
fn phone_add_at(signer: &Signer, name: &str, trust_prefix: &str) -> Added {
    let out = run(&mut signer.cmd(&["phone", "add", "--name", name]));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "phone add: {stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "two lines on stdout: {stdout}");
    let trust = lines[1]
        .strip_prefix("trust: ")
        .unwrap_or_else(|| panic!("line 2 is the trust link: {stdout}"))
        .to_owned();
    assert!(
        trust.starts_with(trust_prefix),
        "an IP address, as the page listens there: {trust}"
    );
    Added {
        enrol: lines[0].to_owned(),
        trust,
        stderr,
    }
}

/// The CA's SHA-256 fingerprint as OpenSSL computes it.
fn openssl_fingerprint(pem: &Path) -> String {
    let out = ok(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem));
    out.trim()
        .rsplit('=')
        .next()
        .expect("a fingerprint")
        .to_owned()
}

/// The CA's DER, as OpenSSL reads it from the PEM file.
fn ca_der(pem: &Path) -> Vec<u8> {
    let out = run(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(pem));
    assert!(out.status.success());
    out.stdout
}

/// One HTTP/1.1 request over plain TCP: status, head, body.
/// GET `path` from `addr`: asserts a 200 whose content type starts with
/// `content_type`; returns the body.
fn get_ok(addr: &str, path: &str, content_type: &str) -> Vec<u8> {
    let (status, head, body) =
        http(addr, "GET", path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains(&format!("content-type: {content_type}")),
        "{head}"
    );
    body
}

fn http(addr: &str, method: &str, path: &str) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(WAIT))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)?;
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no head"))?;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head, all[split + 4..].to_vec()))
}

/// `http://IP:PORT/TOKEN` as (`IP:PORT`, `/TOKEN`).
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (addr, path) = rest.split_once('/').expect("a path");
    (addr.to_owned(), format!("/{path}"))
}

/// Waits (bounded) until a connection to `addr` is refused.
fn wait_closed(addr: &str) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "{addr} still accepts");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The leaf the page serves, fetched with the CA in `ca_pem` as the only
/// trusted root (so the fetch itself checks the chain and the name).
fn served_leaf(origin: &str, ca_pem: &Path) -> Vec<u8> {
    let port: u16 = origin.rsplit(':').next().unwrap().parse().unwrap();
    let pem = std::fs::read(ca_pem).expect("page-ca.pem");
    let rt = runtime();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
            .resolve(RP_HOST, ([127, 0, 0, 1], port).into())
            .tls_info(true)
            .timeout(WAIT)
            .build()
            .expect("client");
        let r = client
            .get(format!("{origin}/"))
            .send()
            .await
            .expect("the page over TLS, trusting only its own CA");
        assert_eq!(r.status(), 200);
        r.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .expect("the peer's certificate")
            .to_vec()
    })
}

#[test]
fn the_trust_link_hands_over_the_ca_once_and_nothing_of_the_page() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "homeserver");
    let origin = start_own_ca(&mut signer, "phone");
    let ca_pem = signer.home.join("page-ca.pem");
    let fp = openssl_fingerprint(&ca_pem);
    let der = ca_der(&ca_pem);

    // The page itself is HTTPS only: plain HTTP gets no answer.
    let page_addr = format!("127.0.0.1:{}", origin.rsplit(':').next().unwrap());
    assert!(!matches!(http(&page_addr, "GET", "/"), Ok((200, _, _))));

    let added = phone_add(&signer, "pixel");
    assert!(
        added.enrol.starts_with(&format!("{origin}/#enrol=")),
        "line 1 is the enrolment link, as before: {}",
        added.enrol
    );
    assert!(
        added.stderr.contains(&fp),
        "the terminal shows the CA's fingerprint {fp}: {}",
        added.stderr
    );
    let (addr, page) = split_url(&added.trust);

    // The page: the fingerprint and the two links.
    let body = get_ok(&addr, &page, "text/html");
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(body.contains(&fp), "the page shows the fingerprint: {body}");
    assert!(body.contains(&format!(
        "href=\"{page}/vmux-ca.mobileconfig\">Install on iPhone"
    )));
    assert!(body.contains(&format!("href=\"{page}/vmux-ca.crt\">Install on Android")));
    assert!(!body.contains("<script"), "no script: {body}");

    // Nothing of the page, on any path it uses, under any prefix, and no
    // other method; no redirect anywhere.
    let mut paths: Vec<String> = [
        "/",
        "/index.html",
        "/app.js",
        "/style.css",
        "/sw.js",
        "/manifest.webmanifest",
        "/icon.svg",
        "/api/session",
        "/api/events",
        "/api/status",
        "/api/push/key",
        "/api/enrol/begin",
        "/api/signin/begin",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    for p in paths.clone() {
        paths.push(format!("{page}{p}"));
        paths.push(format!("{page}/..{p}"));
    }
    paths.push(format!("{page}x"));
    paths.push("/x/vmux-ca.crt".into());
    for p in &paths {
        let (status, head, body) = http(&addr, "GET", p).expect("an answer");
        assert_eq!(status, 404, "GET {p}: {head}");
        assert!(!head.to_ascii_lowercase().contains("location:"), "{head}");
        assert_eq!(body, b"not found\n", "GET {p}");
    }
    for m in ["POST", "PUT", "HEAD", "OPTIONS"] {
        let (status, _, _) = http(&addr, m, &page).expect("an answer");
        assert_eq!(status, 404, "{m} {page}");
    }

    // The profile: a plist whose root payload is the CA.
    let profile = get_ok(
        &addr,
        &format!("{page}/vmux-ca.mobileconfig"),
        "application/x-apple-aspen-config",
    );
    let file = dir.path().join("vmux.mobileconfig");
    std::fs::write(&file, &profile).expect("write");
    let parsed = ok(Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(PLIST_CHECK)
        .arg(&file));
    let v: serde_json::Value = serde_json::from_str(&parsed).expect("JSON from python");
    assert_eq!(v["PayloadType"], "Configuration", "{v}");
    assert_eq!(v["PayloadVersion"], 1, "{v}");
    let root = &v["PayloadContent"][0];
    assert_eq!(root["PayloadType"], "com.apple.security.root", "{v}");
    assert_eq!(root["PayloadVersion"], 1, "{v}");
    assert_eq!(
        root["data"].as_str().map(|h| h.to_owned()),
        Some(der.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        "the payload is the CA"
    );

    // Spent: the listener closes (no other link pending).
    wait_closed(&addr);

    // A second link, for Android: the DER itself.
    let again = phone_add(&signer, "pixel-2");
    let (addr2, page2) = split_url(&again.trust);
    let crt = get_ok(
        &addr2,
        &format!("{page2}/vmux-ca.crt"),
        "application/x-x509-ca-cert",
    );
    assert_eq!(crt, der, "the .crt is the CA, DER");
    wait_closed(&addr2);
    // The first link stays spent.
    assert!(http(&addr, "GET", &page).is_err() || http(&addr, "GET", &page).unwrap().0 == 404);
}

/// Prints the profile as JSON: the top-level keys, and each payload's
/// keys with its data as hex.
const PLIST_CHECK: &str = r#"
import json, plistlib, sys
with open(sys.argv[1], 'rb') as f:
    d = plistlib.load(f, fmt=plistlib.FMT_XML)
for k in ('PayloadType', 'PayloadVersion', 'PayloadIdentifier', 'PayloadUUID', 'PayloadDisplayName'):
    assert k in d, k
out = {k: v for k, v in d.items() if k != 'PayloadContent'}
out['PayloadContent'] = []
for p in d['PayloadContent']:
    for k in ('PayloadCertificateFileName', 'PayloadContent', 'PayloadIdentifier', 'PayloadType', 'PayloadUUID', 'PayloadVersion'):
        assert k in p, k
    q = {k: v for k, v in p.items() if k != 'PayloadContent'}
    q['data'] = p['PayloadContent'].hex()
    out['PayloadContent'].append(q)
print(json.dumps(out))
"#;

/// The files a failed start must not leave.
fn page_files(home: &Path) -> Vec<String> {
    [
        "page-ca.key",
        "page-ca.pem",
        "phones.json",
        "push-vapid.key",
    ]
    .iter()
    .filter(|f| home.join(f).exists())
    .map(|f| f.to_string())
    .collect()
}

/// `signer run` with the page flags `args`: must fail with one sentence.
fn fails(signer: &Signer, args: &[&str]) -> String {
    let mut c = signer.cmd(&["run", "--listen", "127.0.0.1:0", "--no-advertise"]);
    c.args(args);
    let out = run(&mut c);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} started: {stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{args:?}: one line: {stderr}"
    );
    assert!(stderr.starts_with("vmux: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_names_a_port_in_use_and_a_ca_for_another_name_fail_with_one_sentence() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "homeserver");
    for bad in [
        "127.0.0.1",
        "::1",
        "[::1]",
        "10.0.0.2",
        "signer",
        "Signer.Vmux.Test",
        "a..test",
        "-a.test",
        "sig_ner.test",
        "signer.vmux.test:8443",
        "https://signer.vmux.test",
        "1.2.3.4.5",
    ] {
        let name = format!("--web-name={bad}");
        let e = fails(&signer, &["--web-listen", "127.0.0.1:0", &name]);
        assert!(e.contains("is not a DNS name"), "{bad}: {e}");
        assert_eq!(page_files(&signer.home), Vec::<String>::new(), "{bad}");
    }
    let e = fails(
        &signer,
        &[
            "--web-listen",
            "127.0.0.1:0",
            "--web-name",
            RP_HOST,
            "--web-origin",
            "https://other.vmux.test:8443",
        ],
    );
    assert!(e.contains("does not name --web-name"), "{e}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let e = fails(&signer, &["--web-listen", &addr, "--web-name", RP_HOST]);
    assert!(
        e.contains(&format!("cannot serve the phone page on {addr}")),
        "{e}"
    );
    assert_eq!(page_files(&signer.home), Vec::<String>::new());

    // A CA made for RP_HOST, then another name: refused, with the way out.
    start_own_ca(&mut signer, "phone");
    signer.kill();
    let pem = std::fs::read(signer.home.join("page-ca.pem")).expect("page-ca.pem");
    let key = std::fs::read(signer.home.join("page-ca.key")).expect("page-ca.key");
    let e = fails(
        &signer,
        &[
            "--web-listen",
            "127.0.0.1:0",
            "--web-name",
            "other.vmux.test",
        ],
    );
    assert!(
        e.contains(&format!(
            "vouches only for {RP_HOST}, not for other.vmux.test"
        )),
        "{e}"
    );
    assert!(e.contains("start over"), "{e}");
    // An unreadable key, a certificate without its key.
    std::fs::write(signer.home.join("page-ca.key"), "garbage").expect("write");
    let e = fails(
        &signer,
        &["--web-listen", "127.0.0.1:0", "--web-name", RP_HOST],
    );
    assert!(e.contains("page-ca.key: not an OpenSSH private key"), "{e}");
    std::fs::remove_file(signer.home.join("page-ca.key")).expect("rm");
    let e = fails(
        &signer,
        &["--web-listen", "127.0.0.1:0", "--web-name", RP_HOST],
    );
    assert!(e.contains("missing beside page-ca.pem"), "{e}");
    // Nothing was rewritten: put the key back and the same CA serves.
    std::fs::write(signer.home.join("page-ca.key"), &key).expect("write");
    assert_eq!(
        std::fs::read(signer.home.join("page-ca.pem")).expect("pem"),
        pem
    );
    let origin = start_own_ca(&mut signer, "phone");
    served_leaf(&origin, &signer.home.join("page-ca.pem"));
}

#[test]
fn the_ca_is_name_constrained_kept_across_restarts_and_renews_the_leaf_under_itself() {
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "homeserver");
    // Leaves of 6 s: renewed when 2 s are left.
    signer.config("page_certificate_seconds = 6\n");
    let origin = start_own_ca(&mut signer, "phone");
    let ca_pem = signer.home.join("page-ca.pem");

    // OpenSSL reads the constraints: critical, only the page's name, no
    // IP address.
    let text = ok(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&ca_pem));
    let nc = text
        .split("X509v3 Name Constraints: critical")
        .nth(1)
        .unwrap_or_else(|| panic!("a critical Name Constraints extension:\n{text}"));
    let nc: Vec<&str> = nc.lines().take(6).map(str::trim).collect();
    assert_eq!(
        nc[..6],
        [
            "",
            "Permitted:",
            &format!("DNS:{RP_HOST}"),
            "Excluded:",
            "IP:0.0.0.0/0.0.0.0",
            "IP:0:0:0:0:0:0:0:0/0:0:0:0:0:0:0:0"
        ],
        "{text}"
    );
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    let fp = openssl_fingerprint(&ca_pem);
    let pem = std::fs::read(&ca_pem).expect("pem");

    // The served leaf changes before it expires, always under the CA.
    let first = served_leaf(&origin, &ca_pem);
    let deadline = Instant::now() + WAIT;
    loop {
        let now = served_leaf(&origin, &ca_pem);
        if now != first {
            break;
        }
        assert!(Instant::now() < deadline, "the leaf was not renewed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        signer
            .daemon()
            .count(|l| l.contains("phone page certificate issued by the signer's own CA"))
            >= 2
    );

    // A restart: the same CA (file and fingerprint), a new leaf under it.
    signer.kill();
    let origin = start_own_ca(&mut signer, "phone");
    assert_eq!(std::fs::read(&ca_pem).expect("pem"), pem, "the CA is kept");
    assert!(
        phone_add(&signer, "pixel").stderr.contains(&fp),
        "same fingerprint"
    );
    served_leaf(&origin, &ca_pem);
}

#[test]
fn a_phone_trusting_only_the_downloaded_crt_enrols_and_refuses_other_names_even_signed_by_the_ca() {
    if let Err(e) = crate::support::browser::check_installed() {
        panic!("{e}");
    }
    let dir = test_dir();
    let mut signer = Signer::init(dir.path(), "homeserver");
    let origin = start_own_ca(&mut signer, "phone");
    let port = origin.rsplit(':').next().unwrap().to_owned();
    let added = phone_add(&signer, "pixel");
    let rules = [
        &format!("MAP {RP_HOST} 127.0.0.1")[..],
        "MAP other.vmux.test 127.0.0.1",
        "MAP evil.vmux.test 127.0.0.1",
        "EXCLUDE 127.0.0.1",
    ];

    // A phone that trusts nothing: the page is refused, the trust page
    // (plain HTTP, an IP address) opens; it taps Install on Android.
    let crt = download_page_ca(
        dir.path(),
        &rules,
        (&format!("{origin}/"), &added.trust),
        &signer.home.join("page-ca.pem"),
        |page| {
            let fp = openssl_fingerprint(&signer.home.join("page-ca.pem"));
            assert!(page.text("#fingerprint").contains(&fp));
        },
    );

    // The same phone, its NSS database holding that file and nothing else.
    let browser = Browser::launch_trusting(dir.path(), &[&crt], &rules);
    let phone = browser.new_isolated_page();
    phone.add_authenticator(Authenticator::default());
    enrol(&phone, &added.enrol);
    assert!(ok(&mut signer.cmd(&["phones"])).contains("pixel"));

    // Another name on the same address and certificate: refused.
    let other = browser.new_page();
    let e = other
        .try_goto(&format!("https://other.vmux.test:{port}/"))
        .unwrap_err();
    assert!(e.contains("ERR_CERT_COMMON_NAME_INVALID"), "{e}");

    // The CA's own key signs a leaf for another name (what a thief of
    // page-ca.key could do): the name constraints make this browser
    // refuse it. The same forgery for the page's own name loads, so the
    // chain is otherwise sound.
    let ca_key = std::fs::read_to_string(signer.home.join("page-ca.key")).expect("page-ca.key");
    let own = forged_server(&ca_key, RP_HOST);
    let page = browser.new_page();
    page.goto(&format!("https://{RP_HOST}:{own}/"));
    assert_eq!(page.text("body"), "forged");
    let evil = forged_server(&ca_key, "evil.vmux.test");
    let e = page
        .try_goto(&format!("https://evil.vmux.test:{evil}/"))
        .unwrap_err();
    assert!(e.contains("ERR_CERT"), "{e}");
}

/// A TLS server on 127.0.0.1 with a leaf for `name` signed by the page
/// CA's key (the OpenSSH file of an unencrypted signer), answering every
/// request with `forged`; returns its port.
fn forged_server(ca_key_openssh: &str, name: &str) -> u16 {
    use p256::pkcs8::EncodePrivateKey;
    use tokio_rustls::rustls;
    let file = ssh_key::PrivateKey::from_openssh(ca_key_openssh).expect("OpenSSH key");
    let ssh_key::private::KeypairData::Ecdsa(ssh_key::private::EcdsaKeypair::NistP256 {
        private,
        ..
    }) = file.key_data()
    else {
        panic!("a P-256 CA key");
    };
    let secret = p256::SecretKey::from_slice(private.as_ref()).expect("scalar");
    let der = secret.to_pkcs8_der().expect("PKCS#8");
    let ca_kp = rcgen::KeyPair::try_from(der.as_bytes()).expect("rcgen key");
    // The issuer as the CA names itself.
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "vmux");
    dn.push(
        rcgen::DnType::CommonName,
        format!("vmux phone page CA for {RP_HOST}"),
    );
    ca.distinguished_name = dn;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let issuer = ca.self_signed(&ca_kp).expect("issuer");
    let leaf_kp = rcgen::KeyPair::generate().expect("leaf key");
    let mut leaf = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("leaf");
    leaf.use_authority_key_identifier_extension = true;
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time_now();
    leaf.not_before = now - std::time::Duration::from_secs(3600);
    leaf.not_after = now + std::time::Duration::from_secs(3600);
    let leaf = leaf
        .signed_by(&leaf_kp, &issuer, &ca_kp)
        .expect("the forged leaf");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_kp.serialize_der().into()),
    )
    .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: close\r\n\r\nforged")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    port
}

/// Now, as rcgen takes it.
fn time_now() -> time::OffsetDateTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64).expect("a time")
}

/// An mDNS query for NAME's IPv4 address, as a phone's resolver sends
/// one (a one-shot query from its own port): prints the addresses of the
/// first answer for NAME, or exits 1 after 30 s.
const MDNS_RESOLVE: &str = r#"
import socket, struct, sys, time
name = sys.argv[1].lower()
q = struct.pack('>HHHHHH', 0x4a11, 0, 1, 0, 0, 0)
for label in name.split('.'):
    q += bytes([len(label)]) + label.encode()
q += b'\x00' + struct.pack('>HH', 1, 1)

def read_name(d, i):
    labels, jumped, end = [], False, i
    while True:
        n = d[i]
        if n & 0xc0 == 0xc0:
            if not jumped:
                end = i + 2
            i, jumped = ((n & 0x3f) << 8) | d[i + 1], True
            continue
        if n == 0:
            return '.'.join(labels).lower(), (end if jumped else i + 1)
        labels.append(d[i + 1:i + 1 + n].decode())
        i += 1 + n

def answers(d):
    qd, an, ns, ar = struct.unpack('>HHHH', d[4:12])
    i = 12
    for _ in range(qd):
        _, i = read_name(d, i)
        i += 4
    out = []
    for _ in range(an + ns + ar):
        n, i = read_name(d, i)
        t, c, ttl, l = struct.unpack('>HHIH', d[i:i + 10])
        i += 10
        if n == name and t == 1 and l == 4:
            out.append(socket.inet_ntoa(d[i:i + 4]))
        i += l
    return out

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
deadline = time.time() + 30
while time.time() < deadline:
    s.sendto(q, ('224.0.0.251', 5353))
    try:
        while True:
            d, _ = s.recvfrom(9000)
            ips = answers(d)
            if ips:
                print(' '.join(sorted(set(ips))))
                sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
"#;

/// A signer in `net`'s namespace b, on its address there, approving on
/// the phone page, whose arguments are `page`.
fn phone_signer_in(net: &Netns, dir: &Path, page: &[&str]) -> Signer {
    let mut signer = Signer::init(dir, "homeserver");
    signer.launch.netns = Some(net.b.clone());
    signer.start_approving(&format!("{}:0", net.b_ip), "phone", page);
    signer
}

/// The address the phone's side of `net` (namespace a) gets for `name`
/// over mDNS ([`MDNS_RESOLVE`]); fails the test if none answers.
fn resolve_over_mdns(net: &Netns, name: &str) -> String {
    let out = run(Command::new("ip")
        .args(["netns", "exec", &net.a, "/usr/bin/python3", "-c"])
        .arg(MDNS_RESOLVE)
        .arg(name));
    assert_success(&out, &format!("no mDNS answer for {name}"));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_pages_local_name_answers_over_mdns_with_the_pages_address() {
    let net = Netns::new();
    let dir = test_dir();
    let web = format!("{}:0", net.b_ip);
    let page = ["--web-listen", &web, "--web-name", "vmux-page-test.local"];
    let signer = phone_signer_in(&net, dir.path(), &page);
    signer.daemon().wait_line(WAIT, |l| {
        l.contains("answering the phone page's name over mDNS")
    });
    // The phone, on the other side of the link, asks for the name.
    assert_eq!(resolve_over_mdns(&net, "vmux-page-test.local"), net.b_ip);
    // The trust link names the page's address too.
    let added = phone_add_at(&signer, "pixel", &format!("http://{}:", net.b_ip));
    assert!(added.enrol.starts_with("https://vmux-page-test.local:"));
}

#[test]
fn with_no_name_the_page_is_hostname_local_and_the_trust_link_names_the_lan_address() {
    let net = Netns::new();
    // The phone's side reaches the signer's through a default route, as
    // on a home network.
    ok(Command::new("ip").args(["-n", &net.b, "route", "add", "default", "via", &net.a_ip]));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_ascii_lowercase();
    let dir = test_dir();
    let signer = phone_signer_in(&net, dir.path(), &["--web-listen", "0.0.0.0:0"]);
    let line = signer
        .daemon()
        .wait_line(WAIT, |l| l.starts_with("phone page at "));
    assert!(
        line.starts_with(&format!("phone page at https://{host}.local:")),
        "{line}"
    );
    let added = phone_add_at(&signer, "pixel", &format!("http://{}:", net.b_ip));
    // The phone opens the trust page at that address.
    let fetch = r#"
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())
"#;
    let page = ok(Command::new("ip")
        .args(["netns", "exec", &net.a, "/usr/bin/python3", "-c", fetch])
        .arg(&added.trust));
    assert!(page.contains("Install on Android"), "{page}");
    if !std::path::Path::new("/run/avahi-daemon/socket").exists() {
        assert_eq!(resolve_over_mdns(&net, &format!("{host}.local")), net.b_ip);
    }
}

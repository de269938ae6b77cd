//! A push service of the test's own: HTTP/2 over TLS on loopback (hyper
//! and rustls, with a throwaway self-signed certificate the client under
//! test is told to trust), recording every request and answering as the
//! test scripts it: a status, or never.
//!
//! With it, the Web Push side of a subscriber ([`Subscriber`]): the keys a
//! browser would make for a subscription, the RFC 8291 `aes128gcm`
//! decryption of what arrives, written here independently of the
//! signer's encryption, and the RFC 8292 VAPID check ([`check_vapid`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::WAIT;

/// One request the push service received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// HTTP version (HTTP/2 when the client negotiated it).
    pub version: hyper::Version,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When its headers arrived.
    pub at: Instant,
}

impl Seen {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How the service answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// This status, with `{"reason": …}` as the body if the text is not
    /// empty.
    Status(u16, &'static str),
    /// This status with a `Retry-After` header (seconds).
    RetryAfter(u16, u64),
    /// Never: the request hangs until the client gives up.
    Never,
}

/// The push service. Answers its default status unless scripted
/// otherwise.
pub struct PushService {
    port: u16,
    ca_file: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    arrivals: Mutex<mpsc::Receiver<Seen>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl PushService {
    /// Starts the service on a loopback port, its certificate (for
    /// `localhost`) written to `dir/push-ca.pem`, answering `status`
    /// (201 for Web Push, 200 for APNs) unless scripted otherwise.
    pub fn start(dir: &Path, status: u16) -> PushService {
        std::fs::create_dir_all(dir).expect("create the push service's directory");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("make the push service's certificate");
        let ca_file = dir.join("push-ca.pem");
        std::fs::write(&ca_file, cert.cert.pem()).expect("write the push service's certificate");
        let certs = vec![cert.cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the push service's certificate");
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let script: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let (tx, arrivals) = mpsc::channel();
        let (port_tx, port_rx) = mpsc::channel();
        let (seen2, script2) = (seen.clone(), script.clone());
        let default = Reply::Status(status, "");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime for the push service");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind the push service");
                let port = listener.local_addr().expect("its address").port();
                let _ = port_tx.send(port);
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, seen, script, tx) =
                        (acceptor.clone(), seen2.clone(), script2.clone(), tx.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let (seen, script, tx) = (seen.clone(), script.clone(), tx.clone());
                                async move { answer(req, &seen, &script, default, &tx).await }
                            },
                        );
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                    });
                }
            });
        });
        PushService {
            port: port_rx.recv_timeout(WAIT).expect("the push service starts"),
            ca_file,
            seen,
            arrivals: Mutex::new(arrivals),
            script,
        }
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The certificate to trust (PEM).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Answers the next requests so, in order (then the default again).
    pub fn script(&self, replies: &[Reply]) {
        self.script
            .lock()
            .expect("script")
            .extend(replies.iter().copied());
    }

    /// Waits (at most [`WAIT`]) for the next request not yet waited for.
    pub fn wait(&self) -> Seen {
        self.arrivals
            .lock()
            .expect("arrivals")
            .recv_timeout(WAIT)
            .expect("a push arrives at the push service")
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    seen: &Mutex<Vec<Seen>>,
    script: &Mutex<VecDeque<Reply>>,
    default: Reply,
    tx: &mpsc::Sender<Seen>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let at = Instant::now();
    let version = req.version();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let s = Seen {
        version,
        method,
        path,
        headers,
        body,
        at,
    };
    seen.lock().expect("seen").push(s.clone());
    let reply = script
        .lock()
        .expect("script")
        .pop_front()
        .unwrap_or(default);
    let _ = tx.send(s);
    let response = |status: u16, body: String| {
        hyper::Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)))
            .expect("a response")
    };
    Ok(match reply {
        Reply::Status(status, "") => response(status, String::new()),
        Reply::Status(status, reason) => response(status, format!("{{\"reason\":\"{reason}\"}}")),
        Reply::RetryAfter(status, secs) => {
            let mut r = response(status, String::new());
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from(secs),
            );
            r
        }
        Reply::Never => std::future::pending().await,
    })
}

/// A subscription's keys as a browser makes them: the P-256 key pair
/// (`p256dh`) and the authentication secret.
pub struct Subscriber {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Default for Subscriber {
    fn default() -> Self {
        Subscriber::new()
    }
}

impl Subscriber {
    /// Fresh keys.
    pub fn new() -> Subscriber {
        let secret = loop {
            let bytes: [u8; 32] = rand_bytes();
            if let Ok(k) = p256::SecretKey::from_slice(&bytes) {
                break k;
            }
        };
        Subscriber {
            secret,
            auth: rand_bytes(),
        }
    }

    /// The public key as the subscription's `p256dh` (base64url).
    pub fn p256dh(&self) -> String {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        B64URL.encode(self.secret.public_key().to_encoded_point(false).as_bytes())
    }

    /// The authentication secret (base64url).
    pub fn auth(&self) -> String {
        B64URL.encode(self.auth)
    }

    /// Decrypts an `aes128gcm` push body (RFC 8188 and RFC 8291): the
    /// plaintext, or why not.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        use aes_gcm::aead::{Aead, KeyInit};
        use hmac::Mac;
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        type H = hmac::Hmac<sha2::Sha256>;
        let mac = |key: &[u8], parts: &[&[u8]]| -> Vec<u8> {
            let mut m = <H as Mac>::new_from_slice(key).expect("HMAC takes any key");
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        };
        if body.len() < 21 {
            return Err("shorter than the aes128gcm header".into());
        }
        let salt = &body[..16];
        let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
        let idlen = body[20] as usize;
        let rest = &body[21..];
        if idlen != 65 || rest.len() < idlen {
            return Err(format!("key id of {idlen} bytes, not a P-256 point"));
        }
        let (keyid, records) = rest.split_at(idlen);
        if records.len() > rs {
            return Err("more than one record".into());
        }
        let sender = p256::PublicKey::from_sec1_bytes(keyid).map_err(|_| "bad sender key")?;
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), sender.as_affine());
        let ua = self.secret.public_key().to_encoded_point(false);
        let prk_key = mac(&self.auth, &[shared.raw_secret_bytes().as_slice()]);
        let ikm = mac(&prk_key, &[b"WebPush: info\0", ua.as_bytes(), keyid, &[1]]);
        let prk = mac(salt, &[&ikm]);
        let cek = mac(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]]);
        let nonce = mac(&prk, &[b"Content-Encoding: nonce\0", &[1]]);
        let cipher = aes_gcm::Aes128Gcm::new_from_slice(&cek[..16]).expect("16-byte key");
        let mut plain = cipher
            .decrypt(aes_gcm::Nonce::from_slice(&nonce[..12]), records)
            .map_err(|_| "the record does not decrypt")?;
        // The last record ends with 2, then padding zeros were stripped before it.
        while plain.last() == Some(&0) {
            plain.pop();
        }
        match plain.pop() {
            Some(2) => Ok(plain),
            _ => Err("no last-record delimiter".into()),
        }
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom(&mut b);
    b
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("read /dev/urandom");
}

/// Checks a push request's VAPID `Authorization` (RFC 8292): `vapid
/// t=JWT, k=KEY` with KEY the server key the page subscribed with
/// (`expected_key`, base64url), an ES256 signature by it, `aud` the push
/// service's origin, `exp` in the future and at most 24 h away, and a
/// `mailto:` or `https:` `sub`. Returns the claims, or why not.
pub fn check_vapid(
    seen: &Seen,
    expected_key: &str,
    expected_aud: &str,
) -> Result<serde_json::Value, String> {
    use p256::ecdsa::signature::Verifier;
    let h = seen.header("authorization").ok_or("no Authorization")?;
    let rest = h.strip_prefix("vapid t=").ok_or("not a vapid header")?;
    let (jwt, k) = rest.split_once(", k=").ok_or("no k=")?;
    if k != expected_key {
        return Err("signed with another key than the page subscribed with".into());
    }
    let d = |s: &str| B64URL.decode(s).map_err(|_| "not base64url".to_owned());
    let (input, sig) = jwt.rsplit_once('.').ok_or("not a JWT")?;
    let (header, claims) = input.split_once('.').ok_or("not a JWT")?;
    let header: serde_json::Value =
        serde_json::from_slice(&d(header)?).map_err(|_| "bad JWT header")?;
    if header["alg"] != "ES256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let sig = p256::ecdsa::Signature::from_slice(&d(sig)?).map_err(|_| "bad signature")?;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&d(k)?).map_err(|_| "bad key")?;
    vk.verify(input.as_bytes(), &sig)
        .map_err(|_| "the JWT's signature does not verify")?;
    let claims: serde_json::Value =
        serde_json::from_slice(&d(claims)?).map_err(|_| "bad JWT claims")?;
    if claims["aud"] != expected_aud {
        return Err(format!("aud {} is not {expected_aud}", claims["aud"]));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    if exp <= now || exp > now + 24 * 3600 {
        return Err(format!("exp {exp} is not within 24 h of now {now}"));
    }
    let sub = claims["sub"].as_str().ok_or("no sub")?;
    if !(sub.starts_with("mailto:") || sub.starts_with("https://")) {
        return Err(format!("sub {sub:?} is no contact"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8291 §5's example decrypts with the subscriber's keys; a
    /// flipped byte or another subscriber does not.
    #[test]
    fn decrypts_the_rfc_8291_example() {
        let d = |s: &str| B64URL.decode(s).unwrap();
        let sub = Subscriber {
            secret: p256::SecretKey::from_slice(&d("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"))
                .unwrap(),
            auth: d("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap(),
        };
        assert_eq!(sub.p256dh(), "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4");
        let mut body = d("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN");
        assert_eq!(
            sub.decrypt(&body).unwrap(),
            b"When I grow up, I want to be a watermelon"
        );
        assert!(Subscriber::new().decrypt(&body).is_err());
        let last = body.len() - 1;
        body[last] ^= 1;
        assert!(sub.decrypt(&body).is_err());
        assert!(sub.decrypt(&body[..10]).is_err());
    }
}

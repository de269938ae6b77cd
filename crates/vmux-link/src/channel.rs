//! The encrypted channel: preamble, Noise XX handshake, and framed,
//! chunked transport messages.

use std::sync::Arc;
use std::time::Duration;

use snow::StatelessTransportState;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use vmux_proto::Message;

use crate::identity::{Identity, StaticKey, STATIC_KEY_LEN};
use crate::LinkError;

/// The Noise protocol every vmux link runs.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// The 8 bytes an agent sends first with the XX pattern (first contact,
/// pairing): magic `vmux` (4 bytes), link version 1 (2 bytes,
/// big-endian), handshake pattern (1 byte: 1 = XX, 2 = IK), reserved 0
/// (1 byte). The signer accepts exactly the two preambles. They are also
/// the Noise prologue, so a tampered preamble fails the handshake.
pub const PREAMBLE: [u8; 8] = *b"vmux\x00\x01\x01\x00";

/// The preamble for the IK pattern: an agent that has pinned the signer's
/// static key authenticates both keys in one round trip, and a responder
/// without the pinned key cannot complete the handshake.
pub const PREAMBLE_IK: [u8; 8] = *b"vmux\x00\x01\x02\x00";

/// The Noise protocol of connections to a pinned signer.
pub const NOISE_PARAMS_IK: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// Which handshake an initiator runs.
#[derive(Debug, Clone, Copy)]
enum Pattern {
    /// XX: learns the responder's key.
    Xx,
    /// IK: the responder must hold this pinned key.
    Ik(StaticKey),
}

/// Largest Noise message (and so largest frame body).
const MAX_FRAME: usize = 65535;
/// Authentication tag added by ChaChaPoly.
const TAG_LEN: usize = 16;
/// Plaintext bytes per chunk: a frame less the tag and the chunk flag.
const MAX_CHUNK: usize = MAX_FRAME - TAG_LEN - 1;
/// Largest reassembled message. A sign request carries at most the SSH
/// agent's 256 KiB message; this leaves room for everything else.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// Time allowed for the preamble and the Noise handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn read_frame(r: &mut BufReader<OwnedReadHalf>, buf: &mut Vec<u8>) -> Result<(), LinkError> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(LinkError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u16::from_be_bytes(len) as usize;
    buf.resize(len, 0);
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(LinkError::Closed),
        Err(e) => Err(e.into()),
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    // Every body is at most MAX_FRAME bytes by construction.
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An open encrypted channel to an authenticated peer.
pub struct Channel {
    /// Receiving half.
    pub reader: ChannelReader,
    /// Sending half.
    pub writer: ChannelWriter,
    remote_static: StaticKey,
    handshake_hash: Vec<u8>,
}

impl Channel {
    /// The peer's static public key, proven by the handshake.
    pub fn remote_static(&self) -> &StaticKey {
        &self.remote_static
    }

    /// The Noise handshake hash: equal on both ends iff no one is in the
    /// middle. Input to the pairing code.
    pub fn handshake_hash(&self) -> &[u8] {
        &self.handshake_hash
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), LinkError> {
        self.writer.send(msg).await
    }

    /// Receives one message.
    pub async fn recv(&mut self) -> Result<Message, LinkError> {
        self.reader.recv().await
    }

    /// Receives one message, failing with [`LinkError::Timeout`] after `t`.
    pub async fn recv_within(&mut self, t: Duration) -> Result<Message, LinkError> {
        self.reader.recv_within(t).await
    }

    /// Runs the initiator (agent) side of the XX handshake on `stream`
    /// (first contact: the signer's key is learned).
    pub async fn connect(stream: TcpStream, identity: &Identity) -> Result<Channel, LinkError> {
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            handshake(stream, identity, Some(Pattern::Xx)),
        )
        .await
        .map_err(|_| LinkError::Timeout)?
    }

    /// Runs the initiator side of the IK handshake to a signer whose key
    /// is pinned: a responder without that key fails the handshake.
    pub async fn connect_pinned(
        stream: TcpStream,
        identity: &Identity,
        signer: &StaticKey,
    ) -> Result<Channel, LinkError> {
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            handshake(stream, identity, Some(Pattern::Ik(*signer))),
        )
        .await
        .map_err(|_| LinkError::Timeout)?
    }

    /// Runs the responder (signer) side of whichever handshake the agent
    /// chose on `stream`.
    pub async fn accept(stream: TcpStream, identity: &Identity) -> Result<Channel, LinkError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, identity, None))
            .await
            .map_err(|_| LinkError::Timeout)?
    }
}

/// `pattern` is the initiator's choice; `None` makes a responder, which
/// learns the pattern from the preamble.
async fn handshake(
    stream: TcpStream,
    identity: &Identity,
    pattern: Option<Pattern>,
) -> Result<Channel, LinkError> {
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let initiator = pattern.is_some();
    let (preamble, params, remote) = match pattern {
        Some(Pattern::Xx) => (PREAMBLE, NOISE_PARAMS, None),
        Some(Pattern::Ik(k)) => (PREAMBLE_IK, NOISE_PARAMS_IK, Some(k)),
        None => {
            let mut pre = [0u8; 8];
            r.read_exact(&mut pre)
                .await
                .map_err(|_| LinkError::BadPreamble)?;
            match pre {
                PREAMBLE => (PREAMBLE, NOISE_PARAMS, None),
                PREAMBLE_IK => (PREAMBLE_IK, NOISE_PARAMS_IK, None),
                _ => return Err(LinkError::BadPreamble),
            }
        }
    };
    if initiator {
        w.write_all(&preamble).await?;
    }
    let params = params.parse().expect("static Noise parameters are valid");
    let mut builder = snow::Builder::new(params)
        .local_private_key(identity.private())?
        .prologue(&preamble)?;
    if let Some(k) = remote.as_ref() {
        builder = builder.remote_public_key(k)?;
    }
    let mut hs = if initiator {
        builder.build_initiator()?
    } else {
        builder.build_responder()?
    };
    let mut msg = vec![0u8; MAX_FRAME];
    let mut frame_buf = Vec::new();
    let mut payload = vec![0u8; MAX_FRAME];
    while !hs.is_handshake_finished() {
        if hs.is_my_turn() {
            let n = hs.write_message(&[], &mut msg)?;
            w.write_all(&frame(&msg[..n])).await?;
        } else {
            read_frame(&mut r, &mut frame_buf).await?;
            hs.read_message(&frame_buf, &mut payload)?;
        }
    }
    let remote: StaticKey = hs
        .get_remote_static()
        .and_then(|k| <[u8; STATIC_KEY_LEN]>::try_from(k).ok())
        .ok_or(LinkError::Malformed(vmux_proto::DecodeError::BadValue(
            "remote static key",
        )))?;
    let handshake_hash = hs.get_handshake_hash().to_vec();
    let transport = Arc::new(hs.into_stateless_transport_mode()?);
    Ok(Channel {
        reader: ChannelReader {
            stream: r,
            transport: transport.clone(),
            nonce: 0,
            frame: Vec::new(),
            plain: vec![0u8; MAX_FRAME],
        },
        writer: ChannelWriter {
            stream: w,
            transport,
            nonce: 0,
            cipher: vec![0u8; MAX_FRAME],
        },
        remote_static: remote,
        handshake_hash,
    })
}

/// The receiving half of a [`Channel`].
pub struct ChannelReader {
    stream: BufReader<OwnedReadHalf>,
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    frame: Vec<u8>,
    plain: Vec<u8>,
}

impl ChannelReader {
    /// Receives one message, failing with [`LinkError::Timeout`] after `t`.
    pub async fn recv_within(&mut self, t: Duration) -> Result<Message, LinkError> {
        tokio::time::timeout(t, self.recv())
            .await
            .map_err(|_| LinkError::Timeout)?
    }

    /// Receives, decrypts, reassembles and decodes one message.
    pub async fn recv(&mut self) -> Result<Message, LinkError> {
        let mut message = Vec::new();
        loop {
            read_frame(&mut self.stream, &mut self.frame).await?;
            let n = self
                .transport
                .read_message(self.nonce, &self.frame, &mut self.plain)?;
            self.nonce += 1;
            let Some((&flag, chunk)) = self.plain[..n].split_first() else {
                return Err(LinkError::Malformed(vmux_proto::DecodeError::Empty));
            };
            if message.len() + chunk.len() > MAX_MESSAGE {
                return Err(LinkError::TooLarge);
            }
            message.extend_from_slice(chunk);
            match flag {
                // Only the last chunk may be short: no stream of empty or
                // tiny continuation chunks.
                0 if chunk.len() == MAX_CHUNK => continue,
                0 => {
                    return Err(LinkError::Malformed(vmux_proto::DecodeError::BadValue(
                        "short continuation chunk",
                    )))
                }
                1 => return Ok(Message::decode(&message)?),
                _ => {
                    return Err(LinkError::Malformed(vmux_proto::DecodeError::BadValue(
                        "chunk flag",
                    )))
                }
            }
        }
    }
}

/// The sending half of a [`Channel`].
pub struct ChannelWriter {
    stream: OwnedWriteHalf,
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    cipher: Vec<u8>,
}

impl ChannelWriter {
    /// Encodes, chunks, encrypts and sends one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), LinkError> {
        let bytes = zeroize::Zeroizing::new(msg.encode());
        if bytes.len() > MAX_MESSAGE {
            return Err(LinkError::TooLarge);
        }
        let mut out = Vec::with_capacity(bytes.len() + 64);
        let mut chunks = bytes.chunks(MAX_CHUNK).peekable();
        let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(MAX_CHUNK + 1));
        while let Some(chunk) = chunks.next() {
            plain.clear();
            plain.push(u8::from(chunks.peek().is_none()));
            plain.extend_from_slice(chunk);
            let n = self
                .transport
                .write_message(self.nonce, &plain, &mut self.cipher)?;
            self.nonce += 1;
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(&self.cipher[..n]);
        }
        self.stream.write_all(&out).await?;
        Ok(())
    }
}

//! NTLM for WinRM: the handshake (through the `sspi` crate) and message
//! sealing in the MIME framing that MS-WSMV 2.2.9.1 prescribes.
//!
//! A default Windows listener on plain HTTP accepts only encrypted bodies:
//! after the NTLM handshake every request and answer is
//! `multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted"`,
//! whose second part is a 4-byte little-endian signature length, the 16-byte
//! NTLM signature and the RC4-sealed envelope. Sealing keys and sequence
//! numbers belong to one authenticated TCP connection, so one [`NtlmContext`]
//! lives exactly as long as one connection, and every sealed message must be
//! unsealed in order (the RC4 stream never skips).

use sspi::{
    AuthIdentity, AuthIdentityBuffers, BufferType, ClientRequestFlags, CredentialUse,
    DataRepresentation, EncryptionFlags, Ntlm, SecurityBuffer, SecurityBufferRef, SecurityStatus,
    Sspi, SspiImpl, Username,
};

pub const PROTOCOL: &str = "application/HTTP-SPNEGO-session-encrypted";
pub const CONTENT_TYPE: &str = "multipart/encrypted;protocol=\"application/HTTP-SPNEGO-session-encrypted\";boundary=\"Encrypted Boundary\"";
const BOUNDARY: &[u8] = b"--Encrypted Boundary";
const SIGNATURE_LEN: usize = 16;

/// One NTLM security context (client side).
pub struct NtlmContext {
    ntlm: Ntlm,
    credentials: Option<AuthIdentityBuffers>,
    target: String,
}

impl std::fmt::Debug for NtlmContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NtlmContext(***)")
    }
}

impl NtlmContext {
    /// `user` may be `user`, `DOMAIN\user` or `user@domain`.
    pub fn new(user: &str, password: &str, host: &str) -> Result<Self, String> {
        let username = Username::parse(user).map_err(|e| format!("user name {user:?}: {e}"))?;
        let identity = AuthIdentity {
            username,
            password: password.to_string().into(),
        };
        let mut ntlm = Ntlm::new();
        let handle = ntlm
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&identity)
            .execute(&mut ntlm)
            .map_err(|e| format!("NTLM credentials: {e}"))?;
        Ok(NtlmContext {
            ntlm,
            credentials: handle.credentials_handle,
            target: format!("HTTP/{host}"),
        })
    }

    /// One step of the handshake: no input gives the NEGOTIATE message, the
    /// server's CHALLENGE gives the AUTHENTICATE message.
    pub fn step(&mut self, input: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut input_buffers = input
            .map(|token| vec![SecurityBuffer::new(token.to_vec(), BufferType::Token)])
            .unwrap_or_default();
        let flags = ClientRequestFlags::CONFIDENTIALITY
            | ClientRequestFlags::INTEGRITY
            | ClientRequestFlags::ALLOCATE_MEMORY;
        let mut builder = self
            .ntlm
            .initialize_security_context()
            .with_credentials_handle(&mut self.credentials)
            .with_context_requirements(flags)
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name(&self.target)
            .with_output(&mut output);
        if input.is_some() {
            builder = builder.with_input(&mut input_buffers);
        }
        let result = self
            .ntlm
            .initialize_security_context_impl(&mut builder)
            .and_then(|mut g| g.resolve_to_result())
            .map_err(|e| format!("NTLM: {e}"))?;
        if matches!(
            result.status,
            SecurityStatus::CompleteAndContinue | SecurityStatus::CompleteNeeded
        ) {
            self.ntlm
                .complete_auth_token(&mut output)
                .map_err(|e| format!("NTLM: {e}"))?;
        }
        Ok(std::mem::take(&mut output[0].buffer))
    }

    /// Seals a SOAP envelope into an encrypted multipart body.
    pub fn seal(&mut self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut signature = vec![0u8; SIGNATURE_LEN];
        let mut data = plain.to_vec();
        {
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut signature),
                SecurityBufferRef::data_buf(&mut data),
            ];
            self.ntlm
                .encrypt_message(EncryptionFlags::empty(), &mut buffers)
                .map_err(|e| format!("NTLM sealing failed: {e}"))?;
        }
        let mut body = Vec::with_capacity(plain.len() + 256);
        body.extend_from_slice(BOUNDARY);
        body.extend_from_slice(b"\r\n\tContent-Type: ");
        body.extend_from_slice(PROTOCOL.as_bytes());
        body.extend_from_slice(
            format!(
                "\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={}\r\n",
                plain.len()
            )
            .as_bytes(),
        );
        body.extend_from_slice(BOUNDARY);
        body.extend_from_slice(b"\r\n\tContent-Type: application/octet-stream\r\n");
        body.extend_from_slice(&(signature.len() as u32).to_le_bytes());
        body.extend_from_slice(&signature);
        body.extend_from_slice(&data);
        body.extend_from_slice(BOUNDARY);
        body.extend_from_slice(b"--\r\n");
        Ok(body)
    }

    /// Unseals an encrypted multipart body, checking its signature and length.
    pub fn unseal(&mut self, body: &[u8]) -> Result<Vec<u8>, String> {
        let (expected_len, payload) = split_multipart(body)?;
        if payload.len() < 4 {
            return Err("the encrypted answer is truncated".into());
        }
        let sig_len = u32::from_le_bytes(payload[..4].try_into().expect("4 bytes")) as usize;
        if payload.len() < 4 + sig_len {
            return Err("the encrypted answer is truncated".into());
        }
        let mut signature = payload[4..4 + sig_len].to_vec();
        let mut data = payload[4 + sig_len..].to_vec();
        let plain = {
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut signature),
                SecurityBufferRef::data_buf(&mut data),
            ];
            self.ntlm
                .decrypt_message(&mut buffers)
                .map_err(|e| format!("cannot decrypt the answer: {e}"))?;
            buffers[1].data().to_vec()
        };
        if plain.len() != expected_len {
            return Err(format!(
                "the decrypted answer has {} bytes, the header says {expected_len}",
                plain.len()
            ));
        }
        Ok(plain)
    }
}

/// Finds the original length and the encrypted payload in the framing.
fn split_multipart(body: &[u8]) -> Result<(usize, &[u8]), String> {
    let bad = || "the encrypted answer is not in the MS-WSMV framing".to_string();
    let length_at = find(body, b"Length=").ok_or_else(bad)? + b"Length=".len();
    let digits: Vec<u8> = body[length_at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    let expected: usize = std::str::from_utf8(&digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(bad)?;
    let marker = b"application/octet-stream\r\n";
    let start = find(body, marker).ok_or_else(bad)? + marker.len();
    let mut payload = &body[start..];
    let end: Vec<u8> = [BOUNDARY, b"--\r\n"].concat();
    if payload.ends_with(&end) {
        payload = &payload[..payload.len() - end.len()];
    } else if let Some(at) = find(payload, &[BOUNDARY, b"--"].concat()) {
        payload = &payload[..at];
    }
    Ok((expected, payload))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

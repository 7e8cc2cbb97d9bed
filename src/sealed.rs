//! Secrets at rest. Values cached in `ops.db` (the worker token, the managed secret, registry
//! password) are sealed with a key kept beside it in `<state>/secret.key` (0600), so the
//! database alone (a backup, a support bundle, `sqlite3 .dump`) reveals no secret.
//! Construction: SHA-256 in counter mode as the keystream, HMAC-SHA-256 over nonce and
//! ciphertext as the tag; built from the sha2 crate we already use for fingerprints.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

const KEY_FILE: &str = "secret.key";
const PREFIX: &str = "sealed1:";

pub struct Sealer {
    key: [u8; 32],
}

impl Sealer {
    /// The state dir's key; created when `create` (never in a dry run). `None` when absent.
    pub fn load(state_dir: &Path, create: bool) -> anyhow::Result<Option<Sealer>> {
        let path = state_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                return Ok(Some(Sealer { key }));
            }
            Ok(_) => bail!(
                "{} is corrupt (expected 32 bytes): remove it and let ops re-extract the config",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        if !create {
            return Ok(None);
        }
        let key: [u8; 32] = random()?;
        crate::state::create_private_dir(state_dir)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(&key)?;
        file.sync_all()?;
        Ok(Some(Sealer { key }))
    }

    pub fn seal(&self, plain: &str) -> anyhow::Result<String> {
        let nonce: [u8; 16] = random()?;
        let mut data = plain.as_bytes().to_vec();
        self.apply_keystream(&nonce, &mut data);
        let tag = self.tag(&nonce, &data);
        Ok(format!(
            "{PREFIX}{}{}{}",
            hex(&nonce),
            hex(&tag[..16]),
            hex(&data)
        ))
    }

    pub fn open(&self, sealed: &str) -> anyhow::Result<String> {
        let body = sealed.strip_prefix(PREFIX).context("not a sealed value")?;
        let bytes = unhex(body).context("sealed value is not hex")?;
        if bytes.len() < 32 {
            bail!("sealed value is too short");
        }
        let (nonce, rest) = bytes.split_at(16);
        let (tag, data) = rest.split_at(16);
        if self.tag(nonce, data)[..16] != *tag {
            bail!("sealed value does not match {KEY_FILE} (the key changed?)");
        }
        let mut data = data.to_vec();
        self.apply_keystream(nonce, &mut data);
        String::from_utf8(data).context("sealed value is not UTF-8")
    }

    fn apply_keystream(&self, nonce: &[u8], data: &mut [u8]) {
        for (i, chunk) in data.chunks_mut(32).enumerate() {
            let block = Sha256::new()
                .chain_update(self.key)
                .chain_update(nonce)
                .chain_update((i as u64).to_le_bytes())
                .finalize();
            for (b, k) in chunk.iter_mut().zip(block.iter()) {
                *b ^= k;
            }
        }
    }

    fn tag(&self, nonce: &[u8], data: &[u8]) -> [u8; 32] {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, k) in self.key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let inner = Sha256::new()
            .chain_update(ipad)
            .chain_update(nonce)
            .chain_update(data)
            .finalize();
        Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize()
            .into()
    }
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(buf)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A short stable fingerprint of some values (for drift detection, never for secrecy).
pub fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_tamper_detection() {
        let dir = std::env::temp_dir().join(format!("ops-seal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(Sealer::load(&dir, false).unwrap().is_none());
        let s = Sealer::load(&dir, true).unwrap().unwrap();
        let secret = "tr_wgt_FakeTokenabcdefghijklmnopqrstuvwxyz0123456789-and-more-than-one-block";
        let sealed = s.seal(secret).unwrap();
        assert!(!sealed.contains("abcdefghij"));
        assert_eq!(s.open(&sealed).unwrap(), secret);
        let again = Sealer::load(&dir, false).unwrap().unwrap();
        assert_eq!(again.open(&sealed).unwrap(), secret);
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('0') { '1' } else { '0' });
        assert!(s.open(&tampered).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fingerprints_are_stable_and_separate_fields() {
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
        assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
    }
}

//! Secrets at rest. Values cached in `ops.db` (the worker token, the managed secret, registry
//! password) are sealed with a key kept beside it in `<state>/secret.key` (0600), so the
//! database alone (a backup, a support bundle, `sqlite3 .dump`) reveals no secret.
//!
//! Construction: ChaCha20-Poly1305 from `ring` (already in the binary through rustls), a random
//! 96-bit nonce per value, and the value's field name as associated data, so a sealed value
//! cannot be moved to another field. Format: `sealed2:` + hex(nonce ‖ ciphertext ‖ tag).
//! Values of the earlier home-made format (`sealed1:`) are still opened, so that extract can
//! re-seal them once (`is_legacy`); nothing new is ever written in it.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

const KEY_FILE: &str = "secret.key";
/// The only fields ever sealed in the legacy format.
const LEGACY_FIELDS: [&str; 3] = [
    "config.record.managed_secret",
    "config.record.registry_password",
    "config.worker_token",
];
const LEGACY_PREFIX: &str = "sealed1:";
const PREFIX: &str = "sealed2:";

pub struct Sealer {
    key: [u8; 32],
    /// The one-time migration from the legacy format is over: legacy values are refused.
    legacy_refused: bool,
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sealer {
    /// The state dir's key; created when `create` (never in a dry run). `None` when absent.
    /// A key file that is a symlink, or that others can read, is refused.
    pub fn load(state_dir: &Path, create: bool) -> anyhow::Result<Option<Sealer>> {
        let path = state_dir.join(KEY_FILE);
        if let Some(key) = read_key(&path)? {
            return Ok(Some(Sealer {
                key,
                legacy_refused: false,
            }));
        }
        if !create {
            return Ok(None);
        }
        let key: [u8; 32] = random()?;
        crate::state::create_private_dir(state_dir)?;
        // Written whole to a private temporary file, then linked into place: a concurrent run
        // or a crash never leaves a short key, and a key that won the race is used as is.
        let tmp = state_dir.join(format!(
            ".{KEY_FILE}.{}.{}",
            std::process::id(),
            hex(&random::<4>()?)
        ));
        let written = (|| -> std::io::Result<()> {
            // create_new (O_EXCL) never follows a symlink; handed over by descriptor.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            crate::privilege::hand_over_fd(&file)?;
            file.write_all(&key)?;
            file.sync_all()
        })();
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, &path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Ok(dir) = std::fs::File::open(state_dir) {
                    let _ = dir.sync_all();
                }
                Ok(Some(Sealer {
                    key,
                    legacy_refused: false,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(read_key(&path)?.map(|key| Sealer {
                    key,
                    legacy_refused: false,
                }))
            }
            Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }

    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is always valid for ChaCha20-Poly1305.
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &self.key).expect("32-byte ChaCha20 key"),
        )
    }

    /// Seals `plain` for the field `field` (e.g. `config.worker_token`).
    pub fn seal(&self, field: &str, plain: &str) -> anyhow::Result<String> {
        let nonce: [u8; NONCE_LEN] = random()?;
        let mut data = plain.as_bytes().to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ad(field)),
                &mut data,
            )
            .map_err(|_| anyhow!("cannot seal {field}"))?;
        Ok(format!("{PREFIX}{}{}", hex(&nonce), hex(&data)))
    }

    /// From now on, values in the legacy format are refused (the migration is over).
    pub fn refuse_legacy(&mut self) {
        self.legacy_refused = true;
    }

    /// Opens a value sealed for `field` (or, until the migration is over, one of the legacy
    /// format, for the three fields that ever used it).
    pub fn open(&self, field: &str, sealed: &str) -> anyhow::Result<String> {
        if let Some(body) = sealed.strip_prefix(LEGACY_PREFIX) {
            if self.legacy_refused || !LEGACY_FIELDS.contains(&field) {
                bail!("sealed {field} is in the legacy format, which is no longer accepted (every value was re-sealed once): ops looks the value up again");
            }
            return self.open_legacy(body);
        }
        let body = sealed.strip_prefix(PREFIX).context("not a sealed value")?;
        let bytes = unhex(body).context("sealed value is not hex")?;
        if bytes.len() < NONCE_LEN + 16 {
            bail!("sealed value is too short");
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().context("nonce")?;
        let mut data = data.to_vec();
        let plain = self
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ad(field)),
                &mut data,
            )
            .map_err(|_| {
                anyhow!("sealed {field} does not open with {KEY_FILE} (the key changed, or the value belongs to another field)")
            })?;
        String::from_utf8(plain.to_vec()).context("sealed value is not UTF-8")
    }

    /// The earlier format: SHA-256 in counter mode plus an HMAC-SHA-256 tag.
    fn open_legacy(&self, body: &str) -> anyhow::Result<String> {
        let bytes = unhex(body).context("sealed value is not hex")?;
        if bytes.len() < 32 {
            bail!("sealed value is too short");
        }
        let (nonce, rest) = bytes.split_at(16);
        let (tag, data) = rest.split_at(16);
        if !ct_eq(&self.legacy_tag(nonce, data)[..16], tag) {
            bail!("sealed value does not match {KEY_FILE} (the key changed?)");
        }
        let mut data = data.to_vec();
        self.legacy_keystream(nonce, &mut data);
        String::from_utf8(data).context("sealed value is not UTF-8")
    }

    fn legacy_keystream(&self, nonce: &[u8], data: &mut [u8]) {
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

    fn legacy_tag(&self, nonce: &[u8], data: &[u8]) -> [u8; 32] {
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

    /// A legacy value, for tests of the migration.
    #[doc(hidden)]
    pub fn seal_legacy(&self, plain: &str) -> anyhow::Result<String> {
        let nonce: [u8; 16] = random()?;
        let mut data = plain.as_bytes().to_vec();
        self.legacy_keystream(&nonce, &mut data);
        let tag = self.legacy_tag(&nonce, &data);
        Ok(format!(
            "{LEGACY_PREFIX}{}{}{}",
            hex(&nonce),
            hex(&tag[..16]),
            hex(&data)
        ))
    }
}

/// Whether a stored value is of the legacy format (to be re-sealed).
pub fn is_legacy(sealed: &str) -> bool {
    sealed.starts_with(LEGACY_PREFIX)
}

fn ad(field: &str) -> Vec<u8> {
    format!("trigger-ops sealed v2: {field}").into_bytes()
}

/// Reads the key, refusing a symlink (not followed: O_NOFOLLOW) or a file others can read.
fn read_key(path: &Path) -> anyhow::Result<Option<[u8; 32]>> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
            "{} is a symlink: ops refuses it (the key must be a private file in the state directory); replace it with the real file",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}): run chmod 600 {} (and consider the sealed secrets exposed: rotate them)",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        );
    }
    let mut bytes = Vec::with_capacity(32);
    file.read_to_end(&mut bytes)?;
    match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(key) => Ok(Some(key)),
        Err(_) => bail!(
            "{} is corrupt (expected 32 bytes): remove it and let ops re-extract the config",
            path.display()
        ),
    }
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| anyhow!("the system's random source failed"))?;
    Ok(buf)
}

/// 48 random bits as 12 hex digits: the part of a resource's name nobody can guess from the
/// settings and the clock (a bake or fleet droplet, a snapshot). 12, not more: a bake droplet's
/// name is its hostname, at most 63 characters.
pub fn nonce() -> anyhow::Result<String> {
    Ok(hex(&random::<6>()?))
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

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ops-seal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn seal_round_trip_and_tamper_detection() {
        let dir = temp("trip");
        assert!(Sealer::load(&dir, false).unwrap().is_none());
        let s = Sealer::load(&dir, true).unwrap().unwrap();
        let secret = "tr_wgt_FakeTokenabcdefghijklmnopqrstuvwxyz0123456789-and-more-than-one-block";
        let sealed = s.seal("config.worker_token", secret).unwrap();
        assert!(sealed.starts_with("sealed2:"));
        assert!(!sealed.contains("abcdefghij"));
        assert_eq!(s.open("config.worker_token", &sealed).unwrap(), secret);
        let again = Sealer::load(&dir, false).unwrap().unwrap();
        assert_eq!(again.open("config.worker_token", &sealed).unwrap(), secret);
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('0') { '1' } else { '0' });
        assert!(s.open("config.worker_token", &tampered).is_err());
        // Bound to its field: the same value under another field does not open.
        let err = s.open("config.managed_secret", &sealed).unwrap_err();
        assert!(format!("{err}").contains("belongs to another field"));
        // Two seals of one value differ (random nonce).
        assert_ne!(s.seal("f", secret).unwrap(), s.seal("f", secret).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn legacy_values_still_open_so_they_can_be_resealed() {
        let dir = temp("legacy");
        let s = Sealer::load(&dir, true).unwrap().unwrap();
        let old = s.seal_legacy("managed-secret-value-1234").unwrap();
        assert!(is_legacy(&old));
        let field = "config.record.managed_secret";
        assert_eq!(s.open(field, &old).unwrap(), "managed-secret-value-1234");
        let mut tampered = old.clone();
        tampered.pop();
        tampered.push(if old.ends_with('0') { '1' } else { '0' });
        assert!(s.open(field, &tampered).is_err());
        // Only for the fields that ever used it, and never once the migration is over.
        assert!(s.open("any", &old).is_err());
        let mut done = Sealer::load(&dir, false).unwrap().unwrap();
        done.refuse_legacy();
        let e = done.open(field, &old).err().unwrap().to_string();
        assert!(e.contains("no longer accepted"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_file_that_is_a_symlink_or_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp("key");
        Sealer::load(&dir, true).unwrap().unwrap();
        let key = dir.join(KEY_FILE);
        assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Sealer::load(&dir, false).err().unwrap();
        assert!(
            format!("{err}").contains("readable by others (mode 644): run chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&key, dir.join("real.key")).unwrap();
        std::os::unix::fs::symlink(dir.join("real.key"), &key).unwrap();
        let err = Sealer::load(&dir, false).err().unwrap();
        assert!(format!("{err}").contains("is a symlink"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_creators_agree_on_one_key() {
        let dir = temp("race");
        let keys: Vec<[u8; 32]> = (0..8)
            .map(|_| {
                let d = dir.clone();
                std::thread::spawn(move || Sealer::load(&d, true).unwrap().unwrap().key)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(keys.iter().all(|k| k == &keys[0]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn fingerprints_are_stable_and_separate_fields() {
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
        assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
    }
}

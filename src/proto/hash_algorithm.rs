//! The hash algorithms a `HashCheck` or `ProcessRecord` may name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A hash algorithm that tasks and results may name, with its digest size.
///
/// Names on the wire are the lowercase [`name`](HashAlgorithm::name)s
/// (`"sha256"`); [`from_name`](HashAlgorithm::from_name) also accepts them in
/// any ASCII case.
///
/// ```
/// use daemoneye_lib::proto::HashAlgorithm;
///
/// let alg: HashAlgorithm = "sha256".parse().unwrap();
/// assert_eq!(alg, HashAlgorithm::Sha256);
/// assert_eq!(alg.hex_len(), 64);
/// assert!("md5".parse::<HashAlgorithm>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    /// SHA-224 (FIPS 180-4): 28-byte digest.
    Sha224,
    /// SHA-256 (FIPS 180-4): 32-byte digest. The default.
    Sha256,
    /// SHA-384 (FIPS 180-4): 48-byte digest.
    Sha384,
    /// SHA-512 (FIPS 180-4): 64-byte digest.
    Sha512,
}

impl HashAlgorithm {
    /// Every known algorithm.
    pub const ALL: [HashAlgorithm; 4] = [Self::Sha224, Self::Sha256, Self::Sha384, Self::Sha512];

    /// The algorithms procmond computes, so the only ones validation accepts
    /// in a task or result: SHA-256. The others are known (their names parse
    /// and their digest sizes are here) but a message naming one is invalid
    /// with [`Rule::UnsupportedHashAlgorithm`](super::Rule::UnsupportedHashAlgorithm).
    pub const SUPPORTED: [HashAlgorithm; 1] = [Self::Sha256];

    /// Whether procmond computes this algorithm (it is in
    /// [`SUPPORTED`](Self::SUPPORTED)).
    pub fn is_supported(self) -> bool {
        Self::SUPPORTED.contains(&self)
    }

    /// The name used on the wire, e.g. `"sha256"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sha224 => "sha224",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Length of the digest in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Length of the digest as hex text: two digits per byte.
    pub const fn hex_len(self) -> usize {
        self.digest_len() * 2
    }

    /// The algorithm called `name`, in any ASCII case; `None` if unknown.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`HashAlgorithm::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hash algorithm `{0}` (known: sha224, sha256, sha384, sha512)")]
pub struct UnknownHashAlgorithm(pub String);

impl FromStr for HashAlgorithm {
    type Err = UnknownHashAlgorithm;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::from_name(name).ok_or_else(|| UnknownHashAlgorithm(super::validate::excerpt(name)))
    }
}

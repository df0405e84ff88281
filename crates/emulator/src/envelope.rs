//! The backup blob format: a versioned JSON envelope with a checksum.
//!
//! ```json
//! {
//!   "format": "drsync-emulator-backup",
//!   "format_version": 1,
//!   "payload": {
//!     "source": {"id": "/subscriptions/.../service/apim-weu", "name": "apim-weu", "location": "westeurope"},
//!     "sku": {"name": "Premium", "capacity": 1},
//!     "created_at": "2026-11-27T12:00:00.000000Z",
//!     "api_version": "2024-05-01",
//!     "configuration_change_date": "2026-11-27T11:58:00.000000Z",
//!     "configuration": {"apis": {...}, "products": {...}, "namedValues": {...}}
//!   },
//!   "checksum": {"algorithm": "sha256", "value": "<hex of sha256(compact JSON of payload)>"}
//! }
//! ```
//!
//! The checksum is SHA-256 of the canonical JSON of `payload` as it stands in the blob: compact,
//! object keys sorted at every depth. Reformatting the file is harmless, but any changed,
//! added or missing field and any truncation fails [`Envelope::decode`] with a precise
//! [`EnvelopeError`]. Anyone can verify a blob with `jq -cS .payload | sha256sum` (jq's `-S`
//! sorts keys the same way; mind the trailing newline jq prints: `jq -jcS`).

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::model::Configuration;
use drsync_core::Timestamp;

/// The envelope's `format` value.
pub const FORMAT: &str = "drsync-emulator-backup";
/// The current format version.
pub const FORMAT_VERSION: u32 = 1;

/// A backup blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// What the checksum covers.
    pub payload: Payload,
    /// The checksum of `payload`.
    pub checksum: Checksum,
}

/// The checksummed content of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// The service that was backed up.
    pub source: Source,
    /// Its SKU at backup time.
    pub sku: SkuJson,
    /// When the backup started (the configuration is as of this instant).
    pub created_at: Timestamp,
    /// The api-version of the backup request.
    pub api_version: String,
    /// The source's `configurationChangeDate` at backup time.
    pub configuration_change_date: Timestamp,
    /// The configuration snapshot.
    pub configuration: Configuration,
}

/// The source service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// ARM resource id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Region (ARM name).
    pub location: String,
}

/// A SKU as ARM writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuJson {
    /// Tier name.
    pub name: String,
    /// Units.
    pub capacity: u32,
}

/// The checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    /// Always `sha256`.
    pub algorithm: String,
    /// Lowercase hex.
    pub value: String,
}

/// Why a blob is not a valid backup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not JSON of the envelope's shape (truncated, or not a backup at all).
    #[error("the blob is not a valid backup envelope (truncated or not a backup): {0}")]
    Malformed(String),
    /// A different `format` value.
    #[error("the blob has format `{0}`, expected `{FORMAT}`")]
    WrongFormat(String),
    /// A format version this emulator does not read.
    #[error("the backup has format version {0}, this emulator reads version {FORMAT_VERSION}")]
    UnsupportedVersion(u32),
    /// The checksum does not match the content.
    #[error("the backup's checksum does not match its content (the blob was altered)")]
    ChecksumMismatch,
}

/// Writes `v` as compact JSON with every object's keys in sorted order (at every depth), so
/// the bytes do not depend on how a map or struct happens to order its fields.
fn canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("a string serializes");
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(v, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("a scalar serializes"),
    }
}

/// SHA-256 (lowercase hex) of the canonical JSON of a payload *as it stands in the blob*, so a
/// field added to the blob is covered too, not only the fields this version reads.
fn digest(payload: &serde_json::Value) -> String {
    let mut bytes = Vec::new();
    canonical(payload, &mut bytes);
    let h = sha2::Sha256::digest(&bytes);
    h.iter().map(|b| format!("{b:02x}")).collect()
}

impl Envelope {
    /// Seals a payload.
    pub fn seal(payload: Payload) -> Self {
        let value = digest(&serde_json::to_value(&payload).expect("payload serializes"));
        Self {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            payload,
            checksum: Checksum {
                algorithm: "sha256".into(),
                value,
            },
        }
    }

    /// The blob bytes (pretty JSON, so people can read it).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("envelope serializes")
    }

    /// Reads and verifies a blob.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        #[derive(Deserialize)]
        struct Head {
            format: String,
            format_version: u32,
        }
        let raw: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        let head = Head::deserialize(&raw).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if head.format != FORMAT {
            return Err(EnvelopeError::WrongFormat(head.format));
        }
        if head.format_version != FORMAT_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(head.format_version));
        }
        let env =
            Envelope::deserialize(&raw).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if env.checksum.algorithm != "sha256" || env.checksum.value != digest(&raw["payload"]) {
            return Err(EnvelopeError::ChecksumMismatch);
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> Envelope {
        let t = chrono::Utc
            .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
            .unwrap();
        Envelope::seal(Payload {
            source: Source {
                id:
                    "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ApiManagement/service/a"
                        .into(),
                name: "a".into(),
                location: "westeurope".into(),
            },
            sku: SkuJson {
                name: "Premium".into(),
                capacity: 1,
            },
            created_at: t,
            api_version: "2024-05-01".into(),
            configuration_change_date: t,
            configuration: Configuration::sample(),
        })
    }

    // See: review of #3: the documented recipe (sorted keys, compact) reproduces the checksum.
    #[test]
    fn checksum_is_sha256_of_sorted_compact_payload() {
        let env = sample();
        let v = serde_json::to_value(&env.payload).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        let mut text = String::from("{");
        let mut sorted = keys.clone();
        sorted.sort();
        for (i, k) in sorted.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let mut inner = Vec::new();
            canonical(&v[k.as_str()], &mut inner);
            text.push_str(&format!("\"{k}\":{}", String::from_utf8(inner).unwrap()));
        }
        text.push('}');
        assert!(text.starts_with("{\"api_version\":\"2024-05-01\",\"configuration\":"));
        let expect: String = sha2::Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(env.checksum.value, expect);
    }

    #[test]
    fn round_trips_and_survives_reformatting() {
        let env = sample();
        assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
        let compact = serde_json::to_vec(&env).unwrap();
        assert_eq!(Envelope::decode(&compact).unwrap(), env);
    }

    #[test]
    fn truncated_altered_and_foreign_blobs_are_refused() {
        let bytes = sample().encode();
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(
            Envelope::decode(cut),
            Err(EnvelopeError::Malformed(_))
        ));
        let text = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("Echo API", "Echo APX");
        assert_eq!(
            Envelope::decode(text.as_bytes()),
            Err(EnvelopeError::ChecksumMismatch)
        );
        let text = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("\"format_version\": 1", "\"format_version\": 9");
        assert_eq!(
            Envelope::decode(text.as_bytes()),
            Err(EnvelopeError::UnsupportedVersion(9))
        );
        // A field added to the payload is covered by the checksum too.
        let text = String::from_utf8(bytes.clone()).unwrap().replacen(
            "\"payload\": {",
            "\"payload\": {\"extra\": 1,",
            1,
        );
        assert_eq!(
            Envelope::decode(text.as_bytes()),
            Err(EnvelopeError::ChecksumMismatch)
        );
        let text = String::from_utf8(bytes).unwrap().replace(FORMAT, "other");
        assert!(matches!(
            Envelope::decode(text.as_bytes()),
            Err(EnvelopeError::WrongFormat(_))
        ));
    }
}

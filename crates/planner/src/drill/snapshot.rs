//! What a service's configuration looks like at one instant, reduced to what a drill compares.
//!
//! A [`ConfigSnapshot`] holds, for APIs, products and named values, each item's name and a
//! SHA-256 of its non-secret content; the service's SKU; its hostnames and its managed identity
//! (the things a restore must leave alone). It is built from items the caller has already read
//! (this module performs no I/O and knows no HTTP): the content of each item is the JSON
//! `properties` object that Azure returns, which is hashed in a canonical form (object keys
//! sorted, whatever order the JSON library keeps) after two normalisations:
//!
//! - every occurrence of the service's own resource id is replaced by `{service}`, so that an
//!   API whose `apiVersionSetId` points into its own service hashes the same in the source and in
//!   the service it was restored into;
//! - a named value marked `secret` loses its `value` before hashing: secrets are never hashed,
//!   logged or stored (Azure does not return them in listings anyway).

use std::collections::BTreeMap;

use drsync_core::{Sku, Timestamp};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The three kinds of configuration item a drill compares.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// An API (`.../apis/{name}`).
    Api,
    /// A product (`.../products/{name}`).
    Product,
    /// A named value (`.../namedValues/{name}`).
    NamedValue,
}

impl ItemKind {
    /// All kinds, in report order.
    pub const ALL: [ItemKind; 3] = [ItemKind::Api, ItemKind::Product, ItemKind::NamedValue];

    /// How a person names one item of this kind ("API", "product", "named value").
    pub fn noun(self) -> &'static str {
        match self {
            ItemKind::Api => "API",
            ItemKind::Product => "product",
            ItemKind::NamedValue => "named value",
        }
    }

    /// The plural noun, for counts.
    pub fn plural(self) -> &'static str {
        match self {
            ItemKind::Api => "APIs",
            ItemKind::Product => "products",
            ItemKind::NamedValue => "named values",
        }
    }
}

impl std::fmt::Display for ItemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.noun())
    }
}

/// A service's managed identity, as far as a drill checks that a restore kept it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct IdentitySnapshot {
    /// `SystemAssigned`, `UserAssigned`, `SystemAssigned, UserAssigned` or `None`.
    pub kind: String,
    /// The system-assigned identity's principal id.
    pub principal_id: Option<String>,
    /// The identity's tenant.
    pub tenant_id: Option<String>,
    /// Resource ids of the user-assigned identities, sorted and lowercased.
    pub user_assigned: Vec<String>,
}

impl std::fmt::Display for IdentitySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            if self.kind.is_empty() {
                "None"
            } else {
                &self.kind
            }
        )?;
        if let Some(p) = &self.principal_id {
            write!(f, " principal {p}")?;
        }
        if !self.user_assigned.is_empty() {
            write!(f, " user-assigned [{}]", self.user_assigned.join(", "))?;
        }
        Ok(())
    }
}

/// One service's configuration, reduced to names and content hashes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigSnapshot {
    /// The service's ARM resource id.
    pub service: String,
    /// When the snapshot was taken.
    pub taken_at: Timestamp,
    /// The service's SKU as read from ARM.
    pub sku: Sku,
    /// The gateway URL (`https://{name}.azure-api.net` in Azure), if known.
    pub gateway_url: Option<String>,
    /// Every configured hostname (custom and default), lowercased and sorted.
    pub hostnames: Vec<String>,
    /// The managed identity, if any.
    pub identity: Option<IdentitySnapshot>,
    /// The service's `configurationChangeDate`, if known.
    pub last_change: Option<Timestamp>,
    /// APIs: name to content hash (hex SHA-256).
    pub apis: BTreeMap<String, String>,
    /// Products: name to content hash.
    pub products: BTreeMap<String, String>,
    /// Named values: name to content hash (secret values excluded).
    pub named_values: BTreeMap<String, String>,
}

/// One item as read from ARM: its name and its `properties` object.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotItem {
    /// The item's name (the last segment of its resource id).
    pub name: String,
    /// Its `properties`, as returned by ARM.
    pub content: Value,
}

impl SnapshotItem {
    /// An item from a name and its properties.
    pub fn new(name: impl Into<String>, content: Value) -> Self {
        Self {
            name: name.into(),
            content,
        }
    }
}

impl ConfigSnapshot {
    /// A snapshot with no items; fill it with [`ConfigSnapshot::add_items`].
    pub fn new(service: impl Into<String>, taken_at: Timestamp, sku: Sku) -> Self {
        Self {
            service: service.into(),
            taken_at,
            sku,
            gateway_url: None,
            hostnames: Vec::new(),
            identity: None,
            last_change: None,
            apis: BTreeMap::new(),
            products: BTreeMap::new(),
            named_values: BTreeMap::new(),
        }
    }

    /// Hashes and records items of one kind. A name seen twice keeps the last content.
    pub fn add_items(&mut self, kind: ItemKind, items: impl IntoIterator<Item = SnapshotItem>) {
        for item in items {
            let hash = content_hash(kind, &self.service, &item.content);
            self.items_mut(kind).insert(item.name, hash);
        }
    }

    /// Sets the hostnames (lowercased, sorted, deduplicated).
    pub fn set_hostnames(&mut self, hostnames: impl IntoIterator<Item = String>) {
        let mut h: Vec<String> = hostnames
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        h.sort();
        h.dedup();
        self.hostnames = h;
    }

    /// The items of one kind.
    pub fn items(&self, kind: ItemKind) -> &BTreeMap<String, String> {
        match kind {
            ItemKind::Api => &self.apis,
            ItemKind::Product => &self.products,
            ItemKind::NamedValue => &self.named_values,
        }
    }

    fn items_mut(&mut self, kind: ItemKind) -> &mut BTreeMap<String, String> {
        match kind {
            ItemKind::Api => &mut self.apis,
            ItemKind::Product => &mut self.products,
            ItemKind::NamedValue => &mut self.named_values,
        }
    }
}

/// The content hash of one item of `kind` belonging to the service `service_id`: hex SHA-256 of
/// the canonical JSON of its normalised content (see the module documentation).
pub fn content_hash(kind: ItemKind, service_id: &str, content: &Value) -> String {
    let mut normalised = replace_service_id(content, &service_id.to_ascii_lowercase());
    if kind == ItemKind::NamedValue {
        redact_secret_value(&mut normalised);
    }
    let mut canonical = String::new();
    write_canonical(&normalised, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Drops `value` from a named value marked `secret: true`.
fn redact_secret_value(content: &mut Value) {
    if let Value::Object(map) = content
        && map.get("secret").and_then(Value::as_bool) == Some(true)
    {
        map.remove("value");
    }
}

/// Replaces the service's resource id (compared case-insensitively, as ARM does) with
/// `{service}` in every string.
fn replace_service_id(value: &Value, service_id_lower: &str) -> Value {
    match value {
        Value::String(s) if !service_id_lower.is_empty() => {
            let lower = s.to_ascii_lowercase();
            if !lower.contains(service_id_lower) {
                return value.clone();
            }
            // ASCII lowercasing keeps byte offsets, so positions found in `lower` apply to `s`.
            let mut out = String::with_capacity(s.len());
            let mut rest = 0;
            for (at, _) in lower.match_indices(service_id_lower) {
                if at < rest {
                    continue;
                }
                out.push_str(&s[rest..at]);
                out.push_str("{service}");
                rest = at + service_id_lower.len();
            }
            out.push_str(&s[rest..]);
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| replace_service_id(v, service_id_lower))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), replace_service_id(v, service_id_lower)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Writes JSON with object keys sorted, independent of `serde_json`'s `preserve_order` feature.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SRC: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ApiManagement/service/apim-weu";
    const DST: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg2/providers/Microsoft.ApiManagement/service/apim-neu";

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a = json!({"path": "orders", "displayName": "Orders", "protocols": ["https"]});
        let b: Value = serde_json::from_str(
            r#"{"protocols":["https"],"displayName":"Orders","path":"orders"}"#,
        )
        .unwrap();
        assert_eq!(
            content_hash(ItemKind::Api, SRC, &a),
            content_hash(ItemKind::Api, SRC, &b)
        );
    }

    #[test]
    fn content_changes_change_the_hash() {
        let a = json!({"path": "orders", "displayName": "Orders"});
        let b = json!({"path": "orders", "displayName": "Orders v2"});
        assert_ne!(
            content_hash(ItemKind::Api, SRC, &a),
            content_hash(ItemKind::Api, SRC, &b)
        );
        let h = content_hash(ItemKind::Api, SRC, &a);
        assert_eq!(h.len(), 64);
        assert!(h.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn own_service_id_is_normalised_across_services() {
        let src = json!({"apiVersionSetId": format!("{SRC}/apiVersionSets/v")});
        let dst = json!({"apiVersionSetId": format!("{}/apiVersionSets/v", DST.to_uppercase())});
        assert_eq!(
            content_hash(ItemKind::Api, SRC, &src),
            content_hash(ItemKind::Api, DST, &dst)
        );
        let other = json!({"apiVersionSetId": format!("{SRC}/apiVersionSets/w")});
        assert_ne!(
            content_hash(ItemKind::Api, SRC, &src),
            content_hash(ItemKind::Api, DST, &other)
        );
    }

    #[test]
    fn secret_named_values_are_hashed_without_their_value() {
        let a = json!({"displayName": "key", "secret": true, "value": "s3cret"});
        let b = json!({"displayName": "key", "secret": true});
        assert_eq!(
            content_hash(ItemKind::NamedValue, SRC, &a),
            content_hash(ItemKind::NamedValue, SRC, &b)
        );
        let plain_a = json!({"displayName": "url", "secret": false, "value": "https://a"});
        let plain_b = json!({"displayName": "url", "secret": false, "value": "https://b"});
        assert_ne!(
            content_hash(ItemKind::NamedValue, SRC, &plain_a),
            content_hash(ItemKind::NamedValue, SRC, &plain_b)
        );
    }

    #[test]
    fn snapshot_collects_items_and_sorted_hostnames() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .into();
        let sku = Sku {
            tier: drsync_core::SkuTier::Premium,
            capacity: 1,
        };
        let mut s = ConfigSnapshot::new(SRC, at, sku);
        s.add_items(
            ItemKind::Api,
            [
                SnapshotItem::new("b", json!({})),
                SnapshotItem::new("a", json!({})),
            ],
        );
        s.set_hostnames([
            "B.example.com".to_string(),
            "a.example.com".into(),
            "b.example.com".into(),
        ]);
        assert_eq!(
            s.items(ItemKind::Api).keys().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(s.hostnames, ["a.example.com", "b.example.com"]);
        assert!(s.items(ItemKind::Product).is_empty());
    }
}

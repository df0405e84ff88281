//! API Management service identity: subscription, resource group, name, and ARM resource ids.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// The ARM resource provider and type of an API Management service.
pub const SERVICE_TYPE: &str = "Microsoft.ApiManagement/service";

/// Azure's rule for service names: 1-50 characters, a letter first, letters, digits and hyphens,
/// no hyphen last (PROTOCOL.md section 1).
static SERVICE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$").expect("valid regex"));

/// What is wrong with an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The subscription id is not a GUID.
    #[error("subscription `{0}` is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
    Subscription(String),
    /// The resource group name breaks Azure's naming rule.
    #[error(
        "resource group `{0}` is invalid: 1-90 letters, digits, `_`, `-`, `.`, `(`, `)`, not ending in `.`"
    )]
    ResourceGroup(String),
    /// The service name breaks Azure's naming rule.
    #[error(
        "service name `{0}` is invalid: 1-50 characters, a letter first, then letters, digits or hyphens, not ending in a hyphen"
    )]
    ServiceName(String),
    /// The text is not an API Management service resource id.
    #[error(
        "`{0}` is not an API Management resource id (/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.ApiManagement/service/{{name}})"
    )]
    ResourceId(String),
}

/// An Azure subscription id: a GUID, kept in lowercase.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct SubscriptionId(String);

impl SubscriptionId {
    /// Parses and validates a subscription GUID.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let ok = text.len() == 36 && uuid::Uuid::try_parse(text).is_ok();
        if ok {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(IdError::Subscription(text.into()))
        }
    }

    /// The GUID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SubscriptionId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SubscriptionId> for String {
    fn from(value: SubscriptionId) -> Self {
        value.0
    }
}

/// Checks a service name against Azure's rule.
pub fn validate_service_name(name: &str) -> Result<(), IdError> {
    if name.len() <= 50 && SERVICE_NAME.is_match(name) {
        Ok(())
    } else {
        Err(IdError::ServiceName(name.into()))
    }
}

/// Checks a resource group name against Azure's rule.
pub fn validate_resource_group(name: &str) -> Result<(), IdError> {
    let chars_ok = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')'));
    if !name.is_empty() && name.chars().count() <= 90 && chars_ok && !name.ends_with('.') {
        Ok(())
    } else {
        Err(IdError::ResourceGroup(name.into()))
    }
}

/// One API Management service, wherever it lives.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ServiceRef {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// The resource group.
    pub resource_group: String,
    /// The service name (globally unique in Azure: it forms `{name}.azure-api.net`).
    pub name: String,
}

impl ServiceRef {
    /// Builds a reference, validating the resource group and the service name.
    pub fn new(
        subscription: SubscriptionId,
        resource_group: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<Self, IdError> {
        let (resource_group, name) = (resource_group.into(), name.into());
        validate_resource_group(&resource_group)?;
        validate_service_name(&name)?;
        Ok(Self {
            subscription,
            resource_group,
            name,
        })
    }

    /// The ARM resource id, `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ApiManagement/service/{name}`.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{SERVICE_TYPE}/{}",
            self.subscription, self.resource_group, self.name
        )
    }

    /// Parses an ARM resource id. Segment keywords compare case-insensitively, as ARM does.
    pub fn parse_resource_id(id: &str) -> Result<Self, IdError> {
        let bad = || IdError::ResourceId(id.into());
        let parts: Vec<&str> = id.trim_end_matches('/').split('/').collect();
        let [empty, subs, sub, rgs, rg, providers, ns, ty, name] = parts.as_slice() else {
            return Err(bad());
        };
        let keywords_ok = empty.is_empty()
            && subs.eq_ignore_ascii_case("subscriptions")
            && rgs.eq_ignore_ascii_case("resourceGroups")
            && providers.eq_ignore_ascii_case("providers")
            && ns.eq_ignore_ascii_case("Microsoft.ApiManagement")
            && ty.eq_ignore_ascii_case("service");
        if !keywords_ok {
            return Err(bad());
        }
        Self::new(SubscriptionId::parse(sub)?, *rg, *name)
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SUB: &str = "00000000-1111-2222-3333-444444444444";

    #[test]
    fn service_names_follow_azure_rule() {
        for ok in ["a", "apim-prod-weu", "A1", &"a".repeat(50)] {
            assert!(validate_service_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1apim", "apim-", "apim_prod", "ap im", &"a".repeat(51)] {
            assert!(validate_service_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subscriptions_must_be_guids() {
        assert!(SubscriptionId::parse(SUB).is_ok());
        assert_eq!(
            SubscriptionId::parse("3F2504E0-4F89-11D3-9A0C-0305E82C3301")
                .unwrap()
                .as_str(),
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
        );
        for bad in [
            "prod",
            "",
            "00000000111122223333444444444444",
            "{00000000-1111-2222-3333-444444444444}",
        ] {
            assert!(SubscriptionId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_ids_parse_case_insensitively() {
        let id = format!(
            "/SUBSCRIPTIONS/{SUB}/resourcegroups/rg-1/providers/microsoft.apimanagement/SERVICE/apim1"
        );
        let r = ServiceRef::parse_resource_id(&id).unwrap();
        assert_eq!(r.name, "apim1");
        assert_eq!(r.resource_group, "rg-1");
        assert!(ServiceRef::parse_resource_id("/subscriptions/x/resourceGroups/r").is_err());
        let other =
            format!("/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.Web/sites/a");
        assert!(ServiceRef::parse_resource_id(&other).is_err());
    }

    proptest! {
        #[test]
        fn resource_id_round_trips(
            sub in any::<u128>(),
            rg in "[a-zA-Z0-9_()-][a-zA-Z0-9_().-]{0,20}[a-zA-Z0-9_()-]",
            name in "[a-zA-Z]([a-zA-Z0-9-]{0,40}[a-zA-Z0-9])?",
        ) {
            let sub = SubscriptionId::parse(&uuid::Uuid::from_u128(sub).to_string()).unwrap();
            let r = ServiceRef::new(sub, rg, name).unwrap();
            prop_assert_eq!(ServiceRef::parse_resource_id(&r.resource_id()).unwrap(), r);
        }
    }
}

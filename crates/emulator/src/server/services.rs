//! ARM resources: services (GET, PUT, PATCH, DELETE, lists), the child collections `apis`,
//! `products` and `namedValues`, and `tenant/configuration/syncState`.

use super::operations::{polling_headers, start_operation};
use super::*;

pub(super) fn list_services(app: &App, req: &Req, sub: &str, rg: Option<&String>) -> Answer {
    let inner = app.inner.lock();
    let items: Vec<Value> = inner
        .services
        .values()
        .filter(|s| {
            s.subscription == sub && rg.is_none_or(|rg| s.resource_group.eq_ignore_ascii_case(rg))
        })
        .map(|s| s.to_json(&app.config.tenant_id))
        .collect();
    match page(&items, req, app.config.page_size) {
        Ok((value, next)) => {
            let mut body = json!({"value": value});
            if let Some(link) = next_link(req, next) {
                body["nextLink"] = json!(link);
            }
            Answer::json(200, body)
        }
        Err(e) => Answer::arm_error(&e),
    }
}

pub(super) fn get_service(app: &App, key: &ServiceKey) -> Answer {
    let inner = app.inner.lock();
    match inner.services.get(key) {
        Some(s) => Answer::json(200, s.to_json(&app.config.tenant_id))
            .header("etag", format!("\"{}\"", s.etag())),
        None => Answer::arm_error(&not_found(key)),
    }
}

pub(super) fn if_match(req: &Req, svc: &Service) -> Result<(), ArmError> {
    if let Some(m) = req.headers.get("if-match").and_then(|v| v.to_str().ok()) {
        let m = m.trim().trim_matches('"');
        if m != "*" && m != svc.etag() {
            return Err(ArmError::new(
                412,
                "PreconditionFailed",
                format!(
                    "The etag '{m}' does not match the resource's current etag '{}'.",
                    svc.etag()
                ),
            ));
        }
    }
    Ok(())
}

/// Applies identity settings from a PUT/PATCH body.
pub(super) fn apply_identity(
    inner: &mut Inner,
    svc: &mut Service,
    identity: &Value,
) -> Result<(), ArmError> {
    let ty = identity
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("None");
    let parts: Vec<String> = ty
        .split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    let valid = parts
        .iter()
        .all(|p| matches!(p.as_str(), "none" | "systemassigned" | "userassigned"));
    if !valid {
        return Err(validation(format!(
            "Identity type '{ty}' is not valid: use None, SystemAssigned, UserAssigned or 'SystemAssigned, UserAssigned'."
        )));
    }
    let system = parts.iter().any(|p| p == "systemassigned");
    let user = parts.iter().any(|p| p == "userassigned");
    if system && svc.principal_id.is_none() {
        svc.principal_id = Some(inner.guid());
    } else if !system {
        svc.principal_id = None;
    }
    if user {
        let Some(map) = identity
            .get("userAssignedIdentities")
            .and_then(Value::as_object)
        else {
            return Err(validation(
                "Identity type UserAssigned needs 'userAssignedIdentities'.",
            ));
        };
        let mut list = Vec::new();
        for id in map.keys() {
            let existing = svc
                .user_assigned
                .iter()
                .find(|u| u.resource_id.eq_ignore_ascii_case(id))
                .cloned();
            list.push(
                existing.unwrap_or_else(|| crate::config::UserAssignedIdentity {
                    resource_id: id.clone(),
                    client_id: inner.guid(),
                    principal_id: inner.guid(),
                }),
            );
        }
        svc.user_assigned = list;
    } else {
        svc.user_assigned.clear();
    }
    Ok(())
}

pub(super) fn parse_sku(v: &Value) -> Result<(SkuTier, u32), ArmError> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| validation("The 'sku.name' property is required."))?;
    let tier = SkuTier::parse(name).map_err(|e| validation(e.to_string()))?;
    let capacity = match v.get("capacity") {
        None | Some(Value::Null) => 1,
        Some(c) => c
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .ok_or_else(|| {
                validation("The 'sku.capacity' property must be a non-negative integer.")
            })?,
    };
    Ok((tier, capacity))
}

pub(super) fn put_service(
    app: &App,
    req: &Req,
    key: &ServiceKey,
    api_version: &str,
    patch: bool,
) -> Answer {
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(e) => return Answer::arm_error(&e),
    };
    let mut inner = app.inner.lock();
    let now = app.now_with(&inner);
    let tenant = app.config.tenant_id.clone();
    let props = body.get("properties").cloned().unwrap_or(json!({}));
    let existing = inner.services.get(key).cloned();
    let Some(mut svc) = existing else {
        if patch {
            return Answer::arm_error(&not_found(key));
        }
        // Create.
        let location = match body.get("location").and_then(Value::as_str) {
            Some(l) => l,
            None => return Answer::arm_error(&validation("The 'location' property is required.")),
        };
        let region = match Region::parse(location) {
            Ok(r) => r,
            Err(_) => {
                return Answer::arm_error(&ArmError::new(
                    400,
                    "LocationNotAvailableForResourceType",
                    format!(
                        "The provided location '{location}' is not available for resource type 'Microsoft.ApiManagement/service'."
                    ),
                ));
            }
        };
        let (sku, capacity) = match body.get("sku").map(parse_sku) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Answer::arm_error(&e),
            None => return Answer::arm_error(&validation("The 'sku' property is required.")),
        };
        let (Some(email), Some(pname)) = (
            props.get("publisherEmail").and_then(Value::as_str),
            props.get("publisherName").and_then(Value::as_str),
        ) else {
            return Answer::arm_error(&validation(
                "The 'properties.publisherEmail' and 'properties.publisherName' properties are required.",
            ));
        };
        let Ok(sub) = drsync_core::SubscriptionId::parse(&key.subscription) else {
            return Answer::arm_error(&ArmError::new(
                400,
                "InvalidSubscriptionId",
                format!(
                    "The provided subscription identifier '{}' is malformed or invalid.",
                    key.subscription
                ),
            ));
        };
        let (rg, name) = path_names(req);
        if drsync_core::service::validate_service_name(&name).is_err() {
            return Answer::arm_error(&validation(format!(
                "The service name '{name}' is invalid: 1-50 letters, digits or hyphens, starting with a letter and not ending with a hyphen."
            )));
        }
        if inner.faults.region_down(region) {
            return Answer::arm_error(&ArmError::new(
                503,
                "ServiceUnavailable",
                format!(
                    "The resource provider in region '{}' is unavailable. Please retry later.",
                    region.display_name()
                ),
            ));
        }
        let mut svc = Service {
            subscription: sub.as_str().to_owned(),
            resource_group: rg,
            name,
            region,
            sku,
            capacity,
            principal_id: None,
            user_assigned: Vec::new(),
            publisher_email: email.to_owned(),
            publisher_name: pname.to_owned(),
            tags: tags_of(&body),
            state: ProvisioningState::Activating,
            created_at: now,
            modified_at: now,
            configuration_change_date: now,
            version: 1,
            custom_hostnames: custom_hostnames(&props),
            config: crate::model::Configuration::sample(),
            active_operation: None,
            last_operation_id: None,
        };
        if let Some(identity) = body.get("identity")
            && let Err(e) = apply_identity(&mut inner, &mut svc, identity)
        {
            return Answer::arm_error(&e);
        }
        inner.services.insert(key.clone(), svc);
        let op = start_operation(
            app,
            &mut inner,
            key,
            OperationKind::Create,
            api_version,
            Plan::Provision,
            None,
        );
        let svc = inner.services[key].clone();
        let a = Answer::json(201, svc.to_json(&tenant));
        drop(inner);
        return polling_headers(app, a, req, &svc, &op);
    };
    // Update.
    if svc.active_operation.is_some() || svc.state != ProvisioningState::Succeeded {
        let e = conflict(&svc, &inner);
        return Answer::arm_error(&e);
    }
    if let Err(e) = if_match(req, &svc) {
        return Answer::arm_error(&e);
    }
    if let Some(location) = body.get("location").and_then(Value::as_str)
        && Region::parse(location).ok() != Some(svc.region)
    {
        return Answer::arm_error(&ArmError::new(
            400,
            "InvalidResourceLocation",
            format!(
                "The resource '{}' already exists in location '{}' in resource group '{}'. A resource with the same name cannot be created in location '{location}'.",
                svc.name,
                svc.region.name(),
                svc.resource_group
            ),
        ));
    }
    let mut sku_changed = false;
    if let Some(sku) = body.get("sku") {
        match parse_sku(sku) {
            Ok((tier, cap)) => {
                sku_changed = (tier, cap) != (svc.sku, svc.capacity);
                svc.sku = tier;
                svc.capacity = cap;
            }
            Err(e) => return Answer::arm_error(&e),
        }
    }
    if body.get("tags").is_some() || !patch {
        svc.tags = tags_of(&body);
    }
    if let Some(e) = props.get("publisherEmail").and_then(Value::as_str) {
        svc.publisher_email = e.to_owned();
    }
    if let Some(n) = props.get("publisherName").and_then(Value::as_str) {
        svc.publisher_name = n.to_owned();
    }
    if props.get("hostnameConfigurations").is_some() {
        svc.custom_hostnames = custom_hostnames(&props);
    }
    if let Some(identity) = body.get("identity")
        && let Err(e) = apply_identity(&mut inner, &mut svc, identity)
    {
        return Answer::arm_error(&e);
    }
    svc.touch(now);
    inner.services.insert(key.clone(), svc);
    if sku_changed {
        let op = start_operation(
            app,
            &mut inner,
            key,
            OperationKind::Update,
            api_version,
            Plan::Provision,
            None,
        );
        let svc = inner.services[key].clone();
        let a = Answer::json(200, svc.to_json(&tenant));
        drop(inner);
        return polling_headers(app, a, req, &svc, &op);
    }
    let svc = &inner.services[key];
    Answer::json(200, svc.to_json(&tenant)).header("etag", format!("\"{}\"", svc.etag()))
}

/// Resource group and service name as written in the request path.
pub(super) fn path_names(req: &Req) -> (String, String) {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    (
        segs.get(3).copied().unwrap_or_default().to_owned(),
        segs.get(7).copied().unwrap_or_default().to_owned(),
    )
}

pub(super) fn tags_of(body: &Value) -> BTreeMap<String, String> {
    body.get("tags")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn custom_hostnames(props: &Value) -> Vec<Value> {
    props
        .get("hostnameConfigurations")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|h| {
                    !h.get("hostName")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.ends_with(".azure-api.net"))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn delete_service(app: &App, key: &ServiceKey) -> Answer {
    let mut inner = app.inner.lock();
    let Some(svc) = inner.services.get(key) else {
        return Answer::empty(204);
    };
    if svc.active_operation.is_some() {
        let e = conflict(svc, &inner);
        return Answer::arm_error(&e);
    }
    inner.services.remove(key);
    Answer::empty(200)
}

pub(super) fn sync_state(app: &App, key: &ServiceKey) -> Answer {
    use sha2::Digest as _;
    let inner = app.inner.lock();
    let Some(svc) = inner.services.get(key) else {
        return Answer::arm_error(&not_found(key));
    };
    let digest = sha2::Sha256::digest(serde_json::to_vec(&svc.config).expect("config serializes"));
    let commit: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    let last_op = svc
        .last_operation_id
        .as_ref()
        .map(|id| {
            json!(format!(
                "{}/tenant/configuration/operationResults/{id}",
                svc.id()
            ))
        })
        .unwrap_or(Value::Null);
    Answer::json(
        200,
        json!({
            "id": format!("{}/tenant/configuration/syncState", svc.id()),
            "type": "Microsoft.ApiManagement/service/tenant/syncState",
            "name": "syncState",
            "properties": {
                "branch": "master",
                "commitId": commit,
                "isExport": false,
                "isSynced": false,
                "isGitEnabled": false,
                "syncDate": ts(svc.created_at),
                "configurationChangeDate": ts(svc.configuration_change_date),
                "lastOperationId": last_op,
            }
        }),
    )
}

/// A child as served: secret named values do not show their value (as in APIM).
pub(super) fn served_child(svc: &Service, kind: ChildKind, name: &str, props: &Value) -> Value {
    let mut props = props.clone();
    if kind == ChildKind::NamedValues
        && props.get("secret").and_then(Value::as_bool) == Some(true)
        && let Some(o) = props.as_object_mut()
    {
        o.remove("value");
    }
    svc.child_json(kind, name, &props)
}

pub(super) fn list_children(app: &App, req: &Req, key: &ServiceKey, kind: ChildKind) -> Answer {
    let inner = app.inner.lock();
    let Some(svc) = inner.services.get(key) else {
        return Answer::arm_error(&not_found(key));
    };
    let items: Vec<Value> = svc
        .config
        .children(kind)
        .iter()
        .map(|(n, p)| served_child(svc, kind, n, p))
        .collect();
    match page(&items, req, app.config.page_size) {
        Ok((value, next)) => {
            let mut body = json!({"value": value, "count": items.len()});
            if let Some(link) = next_link(req, next) {
                body["nextLink"] = json!(link);
            }
            Answer::json(200, body)
        }
        Err(e) => Answer::arm_error(&e),
    }
}

pub(super) fn child_not_found(kind: ChildKind, name: &str) -> ArmError {
    ArmError::new(
        404,
        "ResourceNotFound",
        format!("The {} '{name}' was not found.", kind.segment()),
    )
}

pub(super) fn get_child(app: &App, key: &ServiceKey, kind: ChildKind, name: &str) -> Answer {
    let inner = app.inner.lock();
    let Some(svc) = inner.services.get(key) else {
        return Answer::arm_error(&not_found(key));
    };
    match svc
        .config
        .children(kind)
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some((n, p)) => Answer::json(200, served_child(svc, kind, n, p)),
        None => Answer::arm_error(&child_not_found(kind, name)),
    }
}

pub(super) fn put_child(
    app: &App,
    req: &Req,
    key: &ServiceKey,
    kind: ChildKind,
    name: &str,
) -> Answer {
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(e) => return Answer::arm_error(&e),
    };
    let Some(props) = body.get("properties").filter(|p| p.is_object()).cloned() else {
        return Answer::arm_error(&validation("The 'properties' object is required."));
    };
    if name.is_empty() || name.len() > 256 || name.contains(['/', '\\', '?', '#', '*']) {
        return Answer::arm_error(&validation(format!("The name '{name}' is invalid.")));
    }
    let mut inner = app.inner.lock();
    let now = app.now_with(&inner);
    let Some(svc) = inner.services.get_mut(key) else {
        return Answer::arm_error(&not_found(key));
    };
    let children = svc.config.children_mut(kind);
    let existing = children
        .keys()
        .find(|n| n.eq_ignore_ascii_case(name))
        .cloned();
    let stored_name = existing.clone().unwrap_or_else(|| name.to_owned());
    children.insert(stored_name.clone(), props.clone());
    svc.config_changed(now);
    let status = if existing.is_some() { 200 } else { 201 };
    let svc = &inner.services[key];
    Answer::json(status, served_child(svc, kind, &stored_name, &props))
        .header("etag", format!("\"{}\"", svc.etag()))
}

pub(super) fn delete_child(app: &App, key: &ServiceKey, kind: ChildKind, name: &str) -> Answer {
    let mut inner = app.inner.lock();
    let now = app.now_with(&inner);
    let Some(svc) = inner.services.get_mut(key) else {
        return Answer::arm_error(&not_found(key));
    };
    let children = svc.config.children_mut(kind);
    match children
        .keys()
        .find(|n| n.eq_ignore_ascii_case(name))
        .cloned()
    {
        Some(n) => {
            children.remove(&n);
            svc.config_changed(now);
            Answer::empty(200)
        }
        None => Answer::empty(204),
    }
}

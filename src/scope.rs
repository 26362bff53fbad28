//! SMART scopes, parsed once (SMART App Launch 2.2 §Scopes).

/// The interactions a scope or capability can allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    Patient,
    User,
    System,
}

/// One resource scope such as `patient/MedicationRequest.rs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub context: Context,
    /// `None` is the `*` wildcard: every type, including ones added later.
    pub resource: Option<String>,
    pub create: bool,
    pub read: bool,
    pub update: bool,
    pub delete: bool,
    pub search: bool,
    /// SMART 2.2 query-constrained scope (`patient/Condition.rs?category=…|problem-list-item`):
    /// only resources matching these parameters are reached, read or written.
    pub filter: Vec<(String, String)>,
}

impl Scope {
    /// Parses a v2 (`.cruds` subset, in order, with an optional `?query` constraint) or v1
    /// (`.read`, `.write`, `.*`) resource scope.
    pub fn parse(s: &str) -> Option<Scope> {
        let (ctx, rest) = s.split_once('/')?;
        let context = match ctx {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return None,
        };
        let (rest, filter) = match rest.split_once('?') {
            Some((r, q)) => (r, serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok().filter(|f| !f.is_empty())?),
            None => (rest, Vec::new()),
        };
        let (resource, perms) = rest.split_once('.')?;
        let resource = match resource {
            "*" => None,
            t if t.chars().all(|c| c.is_ascii_alphabetic()) && t.chars().next()?.is_ascii_uppercase() => {
                Some(t.to_string())
            }
            _ => return None,
        };
        // SMART 2.2: v1 `.read` means v2 `.rs`, `.write` means `.cud`, `.*` means `.cruds`.
        let perms = match perms {
            "read" => "rs",
            "write" => "cud",
            "*" => "cruds",
            p => p,
        };
        if perms.is_empty() || !is_ordered_subset(perms, "cruds") {
            return None;
        }
        Some(Scope {
            context,
            resource,
            create: perms.contains('c'),
            read: perms.contains('r'),
            update: perms.contains('u'),
            delete: perms.contains('d'),
            search: perms.contains('s'),
            filter,
        })
    }

    /// Whether this scope permits everything `other` asks for (any context).
    pub fn covers(&self, other: &Scope) -> bool {
        let type_ok = self.resource.is_none() || self.resource == other.resource;
        let filter_ok = self.filter.is_empty() || self.filter == other.filter;
        type_ok
            && filter_ok
            && (self.create || !other.create)
            && (self.read || !other.read)
            && (self.update || !other.update)
            && (self.delete || !other.delete)
            && (self.search || !other.search)
    }

    pub fn allows(&self, rtype: &str, what: Interaction) -> bool {
        let type_ok = self.resource.as_deref().is_none_or(|t| t == rtype);
        type_ok
            && match what {
                Interaction::Create => self.create,
                Interaction::Read => self.read,
                Interaction::Update => self.update,
                Interaction::Delete => self.delete,
                Interaction::Search => self.search,
            }
    }
}

fn is_ordered_subset(s: &str, of: &str) -> bool {
    let mut rest = of.chars();
    s.chars().all(|c| rest.by_ref().any(|o| o == c))
}

/// A token's whole scope string, parsed.
#[derive(Clone, Debug, Default)]
pub struct Scopes {
    pub resources: Vec<Scope>,
    pub openid: bool,
    pub fhir_user: bool,
    pub launch_patient: bool,
    pub offline_access: bool,
}

impl Scopes {
    pub fn parse(s: &str) -> Scopes {
        let mut out = Scopes::default();
        for word in s.split_whitespace() {
            match word {
                "openid" => out.openid = true,
                "fhirUser" => out.fhir_user = true,
                "launch/patient" => out.launch_patient = true,
                "offline_access" => out.offline_access = true,
                w => out.resources.extend(Scope::parse(w)),
            }
        }
        out
    }

    pub fn allows(&self, rtype: &str, what: Interaction) -> bool {
        self.resources.iter().any(|s| s.allows(rtype, what))
    }

    /// The query constraints on `what` for `rtype`: `None` when some scope allows it without
    /// one, else the alternatives (any one of them must match).
    pub fn constraints(&self, rtype: &str, what: Interaction) -> Option<Vec<Vec<(String, String)>>> {
        let allowing: Vec<&Scope> = self.resources.iter().filter(|s| s.allows(rtype, what)).collect();
        if allowing.iter().any(|s| s.filter.is_empty()) {
            return None;
        }
        Some(allowing.into_iter().map(|s| s.filter.clone()).collect())
    }

    /// True when some scope for this type is patient-context (the token speaks for one patient).
    pub fn has_context(&self, ctx: Context) -> bool {
        self.resources.iter().any(|s| s.context == ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_parse_to_the_same_permissions() {
        assert_eq!(Scope::parse("patient/MedicationRequest.read"), Scope::parse("patient/MedicationRequest.rs"));
        let w = Scope::parse("system/*.write").unwrap();
        assert!(w.create && w.update && w.delete && !w.read && !w.search);
        assert!(Scope::parse("user/*.cruds").unwrap().allows("Patient", Interaction::Delete));
    }

    #[test]
    fn query_constrained_scopes_keep_their_permissions() {
        let s = Scope::parse("patient/MedicationRequest.cruds?status=active").unwrap();
        assert!(s.read && s.search && s.create && s.update && s.delete);
        assert_eq!(s.filter, vec![("status".to_string(), "active".to_string())]);
        let all = Scopes::parse("patient/MedicationRequest.rs?status=active patient/AllergyIntolerance.rs");
        assert!(all.constraints("MedicationRequest", Interaction::Read).is_some());
        assert!(all.constraints("AllergyIntolerance", Interaction::Read).is_none());
        assert_eq!(Scope::parse("patient/MedicationRequest.rs?"), None);
    }

    #[test]
    fn malformed_scopes_grant_nothing() {
        for s in ["patient/Foo.dus", "patient/MedicationRequest.", "nobody/*.rs", "patient/*.x", "patient"] {
            assert_eq!(Scope::parse(s), None, "{s}");
        }
        let s = Scopes::parse("openid fhirUser patient/AllergyIntolerance.rs junk");
        assert!(s.openid && s.fhir_user);
        assert!(s.allows("AllergyIntolerance", Interaction::Search));
        assert!(!s.allows("MedicationRequest", Interaction::Read));
    }
}

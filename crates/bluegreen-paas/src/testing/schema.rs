//! The checks of requests and answers against Heroku's published JSON hyper-schema.
//!
//! Validation is the `jsonschema` crate's, as JSON Schema draft 4 (what the Platform
//! API's schema declares for its definitions). `$ref`s are resolved within the one
//! schema document, never fetched. Heroku's own keyword `strictProperties: true` is a
//! custom keyword: an object may hold no property beyond those its schema lists in
//! `properties` or matches with `patternProperties`. Formats are checked, and a
//! format the checks do not know makes loading fail rather than pass everything;
//! so does a `pattern` that does not compile. Two formats are the checks' own:
//! `uuid` (not a draft-4 format), and `uri`, read as a URI *reference*: the schema
//! gives a domain's `hostname` (`subdomain.example.com`, its own example) that
//! format, and a bare hostname is a reference, not an absolute URI.
//!
//! What is left here is finding the links of a request: the schema's links by method
//! and `href` template (`/apps/{(%23%2Fdefinitions%2Fapp%2Fdefinitions%2Fidentity)}`
//! matches one path segment).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::paths::Location;
use jsonschema::{Draft, Keyword, Registry, ValidationError, Validator};
use serde_json::{json, Map, Value};

/// The environment variable that names the schema file by default.
pub const SCHEMA_ENV: &str = "HEROKU_PLATFORM_API_SCHEMA";

/// The URI the schema document is registered under: every `#/definitions/...`
/// reference of a link resolves against it.
const BASE_URI: &str = "https://platform-api.invalid/schema";

/// Why a schema cannot be used.
#[derive(Debug)]
pub struct SchemaError(String);

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SchemaError {}

/// One segment of a link's `href`.
#[derive(Debug, PartialEq)]
enum Segment {
    Literal(String),
    /// `{(...)}`: any one non-empty segment.
    Variable,
}

/// One link of the schema, with its compiled request and answer schemas.
struct Link {
    method: String,
    href: Vec<Segment>,
    title: String,
    request: Option<Validator>,
    answer: Option<Validator>,
}

/// A loaded hyper-schema: its links, each with validators for the request body
/// (`schema`) and for the answer (`targetSchema`).
pub struct Schema {
    links: Vec<Link>,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("links", &self.links.len())
            .finish()
    }
}

impl Schema {
    /// Reads and compiles the schema file at `path`. The same path is read and
    /// compiled once per process.
    pub fn load(path: &Path) -> Result<Arc<Schema>, SchemaError> {
        static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<Schema>>>> = OnceLock::new();
        let mut loaded = LOADED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(schema) = loaded.get(path) {
            return Ok(schema.clone());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| SchemaError(format!("cannot read {}: {e}", path.display())))?;
        let root: Value = serde_json::from_str(&text)
            .map_err(|e| SchemaError(format!("{} is not JSON: {e}", path.display())))?;
        let schema = Arc::new(
            Schema::new(root).map_err(|e| SchemaError(format!("{}: {}", path.display(), e.0)))?,
        );
        loaded.insert(path.to_owned(), schema.clone());
        Ok(schema)
    }

    /// Compiles a hyper-schema document: every link's `schema` and `targetSchema`.
    pub fn new(mut root: Value) -> Result<Schema, SchemaError> {
        strip_meta(&mut root);
        let registry = Registry::new()
            .draft(Draft::Draft4)
            .add(BASE_URI, root.clone())
            .and_then(|r| r.prepare())
            .map_err(|e| SchemaError(format!("the schema's references: {e}")))?;
        // a link's schema is compiled where it stands in the document, so that its
        // `#/definitions/...` resolve against the document
        let compile = |pointer: &str| -> Result<Validator, SchemaError> {
            jsonschema::options()
                .with_draft(Draft::Draft4)
                .with_registry(&registry)
                .should_validate_formats(true)
                .should_ignore_unknown_formats(false)
                .with_format("uuid", is_uuid)
                .with_format("uri", is_uri_reference)
                .with_keyword("strictProperties", strict_properties)
                .build(&json!({ "$ref": format!("{BASE_URI}#{pointer}") }))
                .map_err(|e| SchemaError(format!("#{pointer}: {e}")))
        };
        let mut links = Vec::new();
        let definitions = root.get("definitions").and_then(Value::as_object);
        for (name, definition) in definitions.into_iter().flatten() {
            let listed = definition.get("links").and_then(Value::as_array);
            for (i, link) in listed.into_iter().flatten().enumerate() {
                let (Some(href), Some(method)) = (
                    link.get("href").and_then(Value::as_str),
                    link.get("method").and_then(Value::as_str),
                ) else {
                    continue;
                };
                let at = format!("/definitions/{}/links/{i}", pointer_segment(name));
                let request = match link.get("schema") {
                    Some(_) => Some(compile(&format!("{at}/schema"))?),
                    None => None,
                };
                let answer = match link.get("targetSchema") {
                    Some(_) => Some(compile(&format!("{at}/targetSchema"))?),
                    None => None,
                };
                links.push(Link {
                    method: method.to_ascii_uppercase(),
                    href: parse_href(href),
                    title: format!(
                        "{name}: {}",
                        link.get("title").and_then(Value::as_str).unwrap_or("")
                    ),
                    request,
                    answer,
                });
            }
        }
        Ok(Schema { links })
    }

    /// How many links the schema has.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    fn links_of(&self, method: &str, path: &str) -> Vec<&Link> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.links
            .iter()
            .filter(|l| l.method.eq_ignore_ascii_case(method) && href_matches(&l.href, &parts))
            .collect()
    }

    /// Checks a request: some link of the schema is `method path`, and the body
    /// (`None`: no body) is what that link takes.
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), String> {
        let links = self.links_of(method, path);
        if links.is_empty() {
            return Err(format!("no link of the schema is {method} {path}"));
        }
        let mut errors = Vec::new();
        for link in &links {
            let empty = body.is_none_or(|b| b.is_null() || b == &Value::Object(Map::new()));
            match (&link.request, body) {
                (Some(validator), Some(body)) => match problems(validator, body) {
                    None => return Ok(()),
                    Some(p) => errors.push(format!("{}: {p}", link.title)),
                },
                (Some(_), None) => errors.push(format!("{}: a body is required", link.title)),
                (None, _) if empty => return Ok(()),
                (None, _) => errors.push(format!("{}: takes no body", link.title)),
            }
        }
        Err(format!("{method} {path}: {}", errors.join(" | ")))
    }

    /// Checks a successful answer's body against the `targetSchema` of the links of
    /// `method path`.
    pub fn check_response(&self, method: &str, path: &str, body: &Value) -> Result<(), String> {
        let links = self.links_of(method, path);
        if links.is_empty() {
            return Err(format!("no link of the schema is {method} {path}"));
        }
        let mut errors = Vec::new();
        for link in &links {
            let Some(validator) = &link.answer else {
                return Ok(());
            };
            match problems(validator, body) {
                None => return Ok(()),
                Some(p) => errors.push(format!("{}: {p}", link.title)),
            }
        }
        Err(format!("answer to {method} {path}: {}", errors.join(" | ")))
    }
}

/// What is wrong with `value`, or `None`.
fn problems(validator: &Validator, value: &Value) -> Option<String> {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_owned() } else { at };
            format!("at {at}: {e}")
        })
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// Removes what would make the document another draft or another resource: the
/// `$schema` of the document and of each definition (`interagent-hyper-schema`,
/// draft-04 `hyper-schema`; the checks are draft 4 throughout), and their string
/// `id`s (a draft-4 `id` would move the base that `#/definitions/...` resolves
/// against).
fn strip_meta(root: &mut Value) {
    fn strip(v: &mut Value) {
        if let Some(o) = v.as_object_mut() {
            o.remove("$schema");
            if o.get("id").is_some_and(Value::is_string) {
                o.remove("id");
            }
        }
    }
    strip(root);
    if let Some(defs) = root.get_mut("definitions").and_then(Value::as_object_mut) {
        for d in defs.values_mut() {
            strip(d);
        }
    }
}

/// A JSON pointer segment, as it stands in a URI fragment.
fn pointer_segment(name: &str) -> String {
    let escaped = name.replace('~', "~0").replace('/', "~1");
    escaped
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn parse_href(href: &str) -> Vec<Segment> {
    href.trim_start_matches('/')
        .split('/')
        .map(|s| {
            if s.starts_with("{(") && s.ends_with(")}") {
                Segment::Variable
            } else {
                Segment::Literal(s.to_owned())
            }
        })
        .collect()
}

fn href_matches(href: &[Segment], parts: &[&str]) -> bool {
    href.len() == parts.len()
        && href.iter().zip(parts).all(|(s, p)| match s {
            Segment::Literal(l) => l == p,
            Segment::Variable => !p.is_empty(),
        })
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A URI reference (RFC 3986): its characters, well-formed percent escapes, and a
/// well-formed scheme when a `:` comes before any `/`, `?` or `#`.
fn is_uri_reference(text: &str) -> bool {
    const OTHER: &[u8] = b"-._~:/?#[]@!$&'()*+,;=";
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || OTHER.contains(&b)) {
            return false;
        }
        i += 1;
    }
    let head = text.split(['/', '?', '#']).next().unwrap_or("");
    match head.split_once(':') {
        Some((scheme, _)) => {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => !text.is_empty(),
    }
}

/// Heroku's `strictProperties`: with `true`, an object holds no property beyond
/// those listed in `properties` or matched by `patternProperties`.
struct StrictProperties {
    listed: Vec<String>,
    patterns: Vec<regex::Regex>,
}

impl StrictProperties {
    fn extra<'a>(&self, instance: &'a Value) -> Vec<&'a str> {
        let Some(object) = instance.as_object() else {
            return Vec::new();
        };
        object
            .keys()
            .filter(|k| !self.listed.iter().any(|l| l == *k))
            .filter(|k| !self.patterns.iter().any(|p| p.is_match(k)))
            .map(String::as_str)
            .collect()
    }
}

impl<'i> Keyword<'i> for StrictProperties {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        let extra = self.extra(instance);
        if extra.is_empty() {
            return Ok(());
        }
        Err(ValidationError::custom(format!(
            "{} not allowed (strictProperties: the schema lists {})",
            extra
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            if self.listed.is_empty() && self.patterns.is_empty() {
                "no property".to_owned()
            } else {
                self.listed
                    .iter()
                    .cloned()
                    .chain(self.patterns.iter().map(|p| format!("/{p}/")))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )))
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        self.extra(instance).is_empty()
    }
}

/// `strictProperties: false` allows what the rest of the schema allows.
struct Lenient;

impl<'i> Keyword<'i> for Lenient {
    fn validate(&self, _: &'i Value) -> Result<(), ValidationError<'i>> {
        Ok(())
    }

    fn is_valid(&self, _: &'i Value) -> bool {
        true
    }
}

fn strict_properties<'a>(
    parent: &'a Map<String, Value>,
    value: &'a Value,
    _: Location,
) -> Result<Box<dyn for<'i> Keyword<'i>>, ValidationError<'a>> {
    match value {
        Value::Bool(false) => Ok(Box::new(Lenient)),
        Value::Bool(true) => {
            let listed = parent
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            let mut patterns = Vec::new();
            let pattern_properties = parent.get("patternProperties").and_then(Value::as_object);
            for pattern in pattern_properties.into_iter().flat_map(|p| p.keys()) {
                patterns.push(regex::Regex::new(pattern).map_err(|e| {
                    ValidationError::custom(format!(
                        "patternProperties {pattern:?} does not compile: {e}"
                    ))
                })?);
            }
            Ok(Box::new(StrictProperties { listed, patterns }))
        }
        other => Err(ValidationError::custom(format!(
            "strictProperties must be a boolean, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs_match_one_segment_per_variable() {
        let href = parse_href("/apps/{(%23%2Fdefinitions%2Fapp%2Fdefinitions%2Fidentity)}/dynos");
        assert!(href_matches(&href, &["apps", "web", "dynos"]));
        assert!(!href_matches(&href, &["apps", "web", "dynos", "web.1"]));
        assert!(!href_matches(&href, &["apps", "", "dynos"]));
        assert!(!href_matches(&href, &["apps", "web", "formation"]));
    }

    #[test]
    fn uuids() {
        assert!(is_uuid("01234567-89ab-cdef-0123-456789abcdef"));
        assert!(!is_uuid("01234567-89ab-cdef-0123-456789abcdeg"));
        assert!(!is_uuid("0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn uri_references() {
        for good in [
            "https://example.herokuapp.com/",
            "http://127.0.0.1:4000/blobs/x?a=b#c",
            "subdomain.example.com",
            "www.example.com:443",
            "a%20b",
        ] {
            assert!(is_uri_reference(good), "{good}");
        }
        for bad in [
            "",
            "a b",
            "50%",
            "%zz",
            "https://exa mple.com",
            "1http://x",
            "<x>",
        ] {
            assert!(!is_uri_reference(bad), "{bad}");
        }
    }

    #[test]
    fn an_unknown_format_does_not_load() {
        let doc = json!({ "definitions": { "x": { "links": [
            { "href": "/x", "method": "POST", "schema": { "format": "no-such-format" } }
        ] } } });
        let e = Schema::new(doc).unwrap_err();
        assert!(e.to_string().contains("no-such-format"), "{e}");
    }

    #[test]
    fn a_pattern_that_does_not_compile_does_not_load() {
        let doc = json!({ "definitions": { "x": { "links": [
            { "href": "/x", "method": "POST", "schema": { "pattern": "([a-z" } }
        ] } } });
        assert!(Schema::new(doc).is_err());
        let doc = json!({ "definitions": { "x": { "links": [
            { "href": "/x", "method": "POST", "schema": {
                "strictProperties": true, "patternProperties": { "([a-z": {} } } }
        ] } } });
        assert!(Schema::new(doc).is_err());
    }

    #[test]
    fn an_unknown_type_does_not_load() {
        let doc = json!({ "definitions": { "x": { "links": [
            { "href": "/x", "method": "POST", "schema": { "type": ["strin"] } }
        ] } } });
        assert!(Schema::new(doc).is_err());
    }

    #[test]
    fn an_unresolvable_reference_does_not_load() {
        let doc = json!({ "definitions": { "x": { "links": [
            { "href": "/x", "method": "POST", "schema": { "$ref": "#/definitions/nothing" } }
        ] } } });
        assert!(Schema::new(doc).is_err());
    }
}

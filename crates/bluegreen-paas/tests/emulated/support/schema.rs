//! A validator for the subset of JSON (hyper-)schema that Heroku's Platform API
//! schema uses: `type`, `properties`, `required`, `additionalProperties`,
//! `patternProperties`, `strictProperties`, `enum`, `pattern`, `format`, `$ref`
//! into `#/definitions/...`, `anyOf`, `oneOf`, `allOf`, `items`, `minimum`,
//! `maxLength`, `minItems` and `maxItems`; and the links (`href`, `method`,
//! `schema`, `targetSchema`) to find what a request and its answer must match.
//!
//! `strictProperties: true` forbids properties that are not listed; in answers it
//! also requires every listed one (the platform sends every field of a resource).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use regex::Regex;
use serde_json::Value;

/// The env var naming the schema file.
pub const SCHEMA_ENV: &str = "HEROKU_PLATFORM_API_SCHEMA";

/// One link of the schema.
struct Link {
    method: String,
    href: Regex,
    title: String,
    schema: Option<Value>,
    target: Option<Value>,
}

/// The loaded schema.
pub struct Schema {
    root: Value,
    links: Vec<Link>,
    patterns: Mutex<HashMap<String, Regex>>,
}

/// The schema from `HEROKU_PLATFORM_API_SCHEMA`, read once per process: `None`
/// (after saying so) when it is unset or absent, and a panic then when `CI=true`.
pub fn load() -> Option<Arc<Schema>> {
    static SCHEMA: OnceLock<Option<Arc<Schema>>> = OnceLock::new();
    SCHEMA.get_or_init(|| read().map(Arc::new)).clone()
}

fn read() -> Option<Schema> {
    let path = std::env::var(SCHEMA_ENV).ok().filter(|p| !p.is_empty());
    let text = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    let Some(text) = text else {
        let why = match &path {
            Some(p) => format!("{SCHEMA_ENV}={p} cannot be read"),
            None => format!("{SCHEMA_ENV} is not set"),
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the Heroku Platform API schema is required in CI: {why}");
        }
        // straight to stderr, past the test harness's capture, so that it is seen
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "heroku schema checks NOT RUN: {why}; the rest of the test runs"
        );
        return None;
    };
    let root: Value = serde_json::from_str(&text).expect("the schema file is JSON");
    Some(Schema::new(root))
}

impl Schema {
    /// A schema from its JSON.
    pub fn new(root: Value) -> Schema {
        let mut links = Vec::new();
        let href_var = Regex::new(r"\{\([^)]*\)\}").unwrap();
        if let Some(defs) = root.get("definitions").and_then(Value::as_object) {
            for (name, def) in defs {
                for link in def
                    .get("links")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let (Some(href), Some(method)) = (
                        link.get("href").and_then(Value::as_str),
                        link.get("method").and_then(Value::as_str),
                    ) else {
                        continue;
                    };
                    let pattern = format!(
                        "^{}$",
                        href_var
                            .split(href)
                            .map(regex::escape)
                            .collect::<Vec<_>>()
                            .join("[^/]+")
                    );
                    links.push(Link {
                        method: method.to_ascii_uppercase(),
                        href: Regex::new(&pattern).unwrap(),
                        title: format!(
                            "{name}: {}",
                            link.get("title").and_then(Value::as_str).unwrap_or("")
                        ),
                        schema: link.get("schema").cloned(),
                        target: link.get("targetSchema").cloned(),
                    });
                }
            }
        }
        Schema {
            root,
            links,
            patterns: Mutex::new(HashMap::new()),
        }
    }

    fn links_of(&self, method: &str, path: &str) -> Vec<&Link> {
        self.links
            .iter()
            .filter(|l| l.method == method && l.href.is_match(path))
            .collect()
    }

    /// Checks a request body (`None`: no body) against the links of `method path`.
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
            match (&link.schema, body) {
                (Some(schema), Some(body)) => {
                    let mut e = Vec::new();
                    self.validate(schema, body, "body", false, &mut e);
                    if e.is_empty() {
                        return Ok(());
                    }
                    errors.push(format!("{}: {}", link.title, e.join("; ")));
                }
                (Some(_), None) => errors.push(format!("{}: a body is required", link.title)),
                (None, None) => return Ok(()),
                (None, Some(b)) if b.is_null() || b == &Value::Object(Default::default()) => {
                    return Ok(())
                }
                (None, Some(_)) => errors.push(format!("{}: takes no body", link.title)),
            }
        }
        Err(format!("{method} {path}: {}", errors.join(" | ")))
    }

    /// Checks an answer body against the links of `method path`.
    pub fn check_response(&self, method: &str, path: &str, body: &Value) -> Result<(), String> {
        let links = self.links_of(method, path);
        if links.is_empty() {
            return Err(format!("no link of the schema is {method} {path}"));
        }
        let mut errors = Vec::new();
        for link in &links {
            let Some(target) = &link.target else {
                return Ok(());
            };
            let mut e = Vec::new();
            self.validate(target, body, "answer", true, &mut e);
            if e.is_empty() {
                return Ok(());
            }
            errors.push(format!("{}: {}", link.title, e.join("; ")));
        }
        Err(format!("answer to {method} {path}: {}", errors.join(" | ")))
    }

    fn resolve<'a>(&'a self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        let decoded = pointer.replace("%23", "#").replace("%2F", "/");
        self.root.pointer(&decoded)
    }

    fn pattern(&self, pattern: &str) -> Regex {
        let mut cache = self.patterns.lock().unwrap();
        cache
            .entry(pattern.to_owned())
            .or_insert_with(|| Regex::new(pattern).unwrap_or_else(|_| Regex::new("").unwrap()))
            .clone()
    }

    /// Adds to `errors` what is wrong with `value` at `at`.
    pub fn validate(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        answer: bool,
        errors: &mut Vec<String>,
    ) {
        let Some(s) = schema.as_object() else {
            return;
        };
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            match self.resolve(r) {
                Some(target) => self.validate(target, value, at, answer, errors),
                None => errors.push(format!("{at}: unresolved $ref {r}")),
            }
        }
        if let Some(types) = s.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !types.iter().any(|t| type_matches(t, value)) {
                errors.push(format!("{at}: {value} is not of type {types:?}"));
                return;
            }
        }
        if let Some(options) = s.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                errors.push(format!("{at}: {value} is not one of {options:?}"));
            }
        }
        if let Some(text) = value.as_str() {
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                if !self.pattern(p).is_match(text) {
                    errors.push(format!("{at}: {text:?} does not match {p}"));
                }
            }
            if let Some(f) = s.get("format").and_then(Value::as_str) {
                if !format_matches(f, text) {
                    errors.push(format!("{at}: {text:?} is not a {f}"));
                }
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
                if text.chars().count() as u64 > max {
                    errors.push(format!("{at}: longer than {max}"));
                }
            }
        }
        if let (Some(n), Some(min)) = (value.as_f64(), s.get("minimum").and_then(Value::as_f64)) {
            if n < min {
                errors.push(format!("{at}: {n} is less than {min}"));
            }
        }
        if let Some(options) = s.get("anyOf").and_then(Value::as_array) {
            let ok = options.iter().any(|o| {
                let mut e = Vec::new();
                self.validate(o, value, at, answer, &mut e);
                e.is_empty()
            });
            if !ok {
                errors.push(format!("{at}: {value} matches none of anyOf"));
            }
        }
        if let Some(options) = s.get("oneOf").and_then(Value::as_array) {
            let n = options
                .iter()
                .filter(|o| {
                    let mut e = Vec::new();
                    self.validate(o, value, at, answer, &mut e);
                    e.is_empty()
                })
                .count();
            if n != 1 {
                errors.push(format!("{at}: {value} matches {n} of oneOf"));
            }
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for o in all {
                self.validate(o, value, at, answer, errors);
            }
        }
        if let Some(items) = value.as_array() {
            if let Some(item) = s.get("items") {
                for (i, v) in items.iter().enumerate() {
                    self.validate(item, v, &format!("{at}[{i}]"), answer, errors);
                }
            }
            if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    errors.push(format!("{at}: fewer than {min} items"));
                }
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    errors.push(format!("{at}: more than {max} items"));
                }
            }
        }
        if let Some(object) = value.as_object() {
            let properties = s.get("properties").and_then(Value::as_object);
            let pattern_properties = s.get("patternProperties").and_then(Value::as_object);
            let strict = s.get("strictProperties").and_then(Value::as_bool) == Some(true);
            for key in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(key) {
                    errors.push(format!("{at}: lacks required {key}"));
                }
            }
            if strict && answer {
                for key in properties.into_iter().flat_map(|p| p.keys()) {
                    if !object.contains_key(key) {
                        errors.push(format!("{at}: lacks {key} (strictProperties)"));
                    }
                }
            }
            for (key, v) in object {
                let mut known = false;
                if let Some(p) = properties.and_then(|p| p.get(key)) {
                    known = true;
                    self.validate(p, v, &format!("{at}.{key}"), answer, errors);
                }
                for (pattern, p) in pattern_properties.into_iter().flatten() {
                    if self.pattern(pattern).is_match(key) {
                        known = true;
                        self.validate(p, v, &format!("{at}.{key}"), answer, errors);
                    }
                }
                if known {
                    continue;
                }
                match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => errors.push(format!("{at}: {key} is not allowed")),
                    Some(extra @ Value::Object(_)) => {
                        self.validate(extra, v, &format!("{at}.{key}"), answer, errors)
                    }
                    _ if strict => {
                        errors.push(format!("{at}: {key} is not allowed (strictProperties)"))
                    }
                    _ => {}
                }
            }
        }
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn format_matches(format: &str, text: &str) -> bool {
    match format {
        "date-time" => humantime::parse_rfc3339(text).is_ok(),
        "date" => {
            text.len() == 10 && humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).is_ok()
        }
        "uuid" => {
            let parts: Vec<&str> = text.split('-').collect();
            parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
                && parts
                    .iter()
                    .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        "email" => text.contains('@') && !text.contains(char::is_whitespace),
        "uri" => !text.is_empty() && !text.contains(char::is_whitespace),
        "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
        _ => true,
    }
}

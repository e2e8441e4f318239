//! Cross-origin requests for a route that asks for them (any `cors_*` key): the provider
//! answers browsers' preflight requests itself and marks the component's responses, with
//! wasmCloud's defaults for what a link leaves out.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

/// Methods a preflight allows when the link names none (wasmCloud's list).
const DEFAULT_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"];
/// Request headers a preflight allows when the link names none (wasmCloud's list).
const DEFAULT_HEADERS: &[&str] = &["accept", "accept-language", "content-type", "content-language"];
/// How long a browser may cache a preflight answer when the link does not say.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// A route's cross-origin policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cors {
    /// Origins allowed; `None` for any.
    origins: Option<Vec<String>>,
    methods: Vec<String>,
    headers: Vec<String>,
    exposed: Vec<String>,
    max_age: Duration,
}

impl Cors {
    /// The policy from the link's `cors_allowed_origins`, `cors_allowed_methods`,
    /// `cors_allowed_headers`, `cors_exposed_headers` (JSON arrays, as wasmCloud takes them,
    /// or comma-separated) and `cors_max_age_secs`.
    pub(crate) fn from_values(
        origins: Option<&str>,
        methods: Option<&str>,
        headers: Option<&str>,
        exposed: Option<&str>,
        max_age: Option<&str>,
    ) -> Result<Self, String> {
        let origins = list("cors_allowed_origins", origins)?;
        for origin in origins.iter().flatten() {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && HeaderValue::from_str(origin).is_ok()
                && !origin["https://".len().min(origin.len())..].contains('/');
            if !valid && origin != "*" {
                return Err(format!("invalid cors_allowed_origins entry {origin:?} (http[s]://host[:port])"));
            }
        }
        let methods = list("cors_allowed_methods", methods)?
            .unwrap_or_else(|| DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect());
        for method in &methods {
            Method::from_bytes(method.as_bytes()).map_err(|_| format!("invalid CORS method {method:?}"))?;
        }
        let headers = list("cors_allowed_headers", headers)?
            .unwrap_or_else(|| DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect());
        let exposed = list("cors_exposed_headers", exposed)?.unwrap_or_default();
        for name in headers.iter().chain(&exposed) {
            if name != "*" {
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("invalid CORS header name {name:?}"))?;
            }
        }
        let max_age = match max_age {
            Some(v) => Duration::from_secs(v.trim().parse().map_err(|_| format!("invalid cors_max_age_secs {v:?}"))?),
            None => DEFAULT_MAX_AGE,
        };
        let origins = origins.filter(|o| !o.is_empty() && !o.iter().any(|o| o == "*"));
        Ok(Self { origins, methods, headers, exposed, max_age })
    }

    /// The `access-control-allow-origin` value for a request from `origin`, if it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            None => Some(HeaderValue::from_static("*")),
            Some(list) => {
                let origin = origin.to_str().ok()?.trim_end_matches('/');
                list.iter().any(|o| o.eq_ignore_ascii_case(origin)).then(|| HeaderValue::from_str(origin).ok())?
            }
        }
    }

    /// The answer to a browser's preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`), or `None` for any other request.
    pub(crate) fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<(StatusCode, HeaderMap)> {
        let origin = headers.get(header::ORIGIN)?;
        if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
            return None;
        }
        let mut answer = HeaderMap::new();
        self.vary(&mut answer);
        let Some(allowed) = self.allow_origin(origin) else { return Some((StatusCode::OK, answer)) };
        answer.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if let Ok(methods) = HeaderValue::from_str(&self.methods.join(", ")) {
            answer.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        if let Ok(names) = HeaderValue::from_str(&self.headers.join(", ")) {
            answer.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, names);
        }
        answer.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(self.max_age.as_secs()));
        Some((StatusCode::OK, answer))
    }

    /// Mark the response to a cross-origin request from an allowed origin.
    pub(crate) fn decorate(&self, origin: Option<&HeaderValue>, response: &mut HeaderMap) {
        self.vary(response);
        let Some(allowed) = origin.and_then(|o| self.allow_origin(o)) else { return };
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if !self.exposed.is_empty()
            && let Ok(names) = HeaderValue::from_str(&self.exposed.join(", "))
        {
            response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, names);
        }
    }

    /// A listed-origin answer depends on the request's origin: caches must know.
    fn vary(&self, headers: &mut HeaderMap) {
        if self.origins.is_some() {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
}

/// A list setting: a JSON array of strings (wasmCloud's form) or comma-separated values.
fn list(key: &str, value: Option<&str>) -> Result<Option<Vec<String>>, String> {
    let Some(value) = value.map(str::trim) else { return Ok(None) };
    let items: Vec<String> = if value.starts_with('[') {
        serde_json::from_str(value).map_err(|e| format!("invalid {key} (a JSON array of strings): {e}"))?
    } else {
        value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    };
    Ok(Some(items.into_iter().map(|s| s.trim().trim_end_matches('/').to_owned()).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, pairs: &[(&str, &str)]) -> (Method, HeaderMap) {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        (method, headers)
    }

    #[test]
    fn any_origin_by_default_and_wasmclouds_lists() {
        let cors = Cors::from_values(None, None, None, None, None).unwrap();
        let (method, headers) =
            request(Method::OPTIONS, &[("origin", "https://app.example"), ("access-control-request-method", "PUT")]);
        let (status, answer) = cors.preflight(&method, &headers).unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(answer[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST, PUT, DELETE, HEAD, OPTIONS");
        assert_eq!(answer[header::ACCESS_CONTROL_MAX_AGE], "300");
        let (method, headers) = request(Method::OPTIONS, &[("origin", "https://app.example")]);
        assert!(cors.preflight(&method, &headers).is_none(), "a plain OPTIONS goes to the component");
    }

    #[test]
    fn listed_origins_only() {
        let cors = Cors::from_values(
            Some(r#"["https://app.example", "http://localhost:3000/"]"#),
            Some("GET,POST"),
            Some(r#"["x-token"]"#),
            Some("x-count"),
            Some("60"),
        )
        .unwrap();
        let mut response = HeaderMap::new();
        cors.decorate(Some(&HeaderValue::from_static("http://localhost:3000")), &mut response);
        assert_eq!(response[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost:3000");
        assert_eq!(response[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-count");
        assert_eq!(response[header::VARY], "origin");
        let mut response = HeaderMap::new();
        cors.decorate(Some(&HeaderValue::from_static("https://evil.example")), &mut response);
        assert!(!response.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        for bad in [Some("ftp://x"), Some(r#"["https://a/b"]"#), Some("[not json")] {
            assert!(Cors::from_values(bad, None, None, None, None).is_err(), "{bad:?}");
        }
        assert!(Cors::from_values(None, Some("GE T"), None, None, None).is_err());
        assert!(Cors::from_values(None, None, None, None, Some("soon")).is_err());
    }
}

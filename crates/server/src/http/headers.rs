//! Security headers on every answer of the router: a Content Security Policy that lets the page
//! load only its own scripts and connect only to its own origin, `frame-ancestors` (who may
//! frame the page: nobody unless the operator says so), no referrer (so no URL with a ticket
//! in it leaks to another site) and no MIME sniffing. A handler that sets one of these itself
//! keeps its own value.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The policy for the page: its own scripts, styles and worklets; media from itself or the
/// blobs Media Source Extensions make; connections to its own origin.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; media-src 'self' blob: data:; connect-src 'self'; \
    worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'";

/// The headers, built once from the configuration (in a cluster, the page may also connect to
/// the cluster's live nodes: the door sends listeners to edges; that policy is rebuilt only
/// when the nodes change, not per answer).
pub struct SecurityHeaders {
    csp: HeaderValue,
    frame_ancestors: String,
    cluster: Option<Arc<crate::app::state::AppState>>,
    /// The cluster's policy, and the node sources it was built from.
    cluster_csp: std::sync::Mutex<Option<(Arc<str>, HeaderValue)>>,
}

impl std::fmt::Debug for SecurityHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityHeaders").field("csp", &self.csp).finish_non_exhaustive()
    }
}

impl SecurityHeaders {
    /// Headers for a node whose page may be framed by `frame_ancestors` (CSP source list, e.g.
    /// `'none'`, `'self'` or `https://example.com`).
    pub fn new(frame_ancestors: &str) -> SecurityHeaders {
        SecurityHeaders {
            csp: content_security_policy(frame_ancestors),
            frame_ancestors: frame_ancestors.to_owned(),
            cluster: None,
            cluster_csp: std::sync::Mutex::new(None),
        }
    }

    /// The same headers, letting the page connect to `app`'s cluster nodes too.
    pub fn in_cluster(mut self, app: Arc<crate::app::state::AppState>) -> SecurityHeaders {
        self.cluster = Some(app);
        self
    }

    fn csp(&self) -> HeaderValue {
        let Some(app) = &self.cluster else { return self.csp.clone() };
        let sources = app.cluster.connect_sources();
        if sources.is_empty() {
            return self.csp.clone();
        }
        let mut cached = self.cluster_csp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((built_from, value)) = cached.as_ref()
            && Arc::ptr_eq(built_from, &sources)
        {
            return value.clone();
        }
        let policy = CSP.replace("connect-src 'self'", &format!("connect-src 'self'{sources}"));
        let value =
            HeaderValue::from_str(&format!("{policy}; frame-ancestors {}", self.frame_ancestors))
                .unwrap_or_else(|_| self.csp.clone());
        *cached = Some((sources, value.clone()));
        value
    }

    fn apply(&self, res: &mut Response) {
        let headers = res.headers_mut();
        let defaults: [(HeaderName, HeaderValue); 3] = [
            (header::CONTENT_SECURITY_POLICY, self.csp()),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ];
        for (name, value) in defaults {
            headers.entry(name).or_insert(value);
        }
    }
}

/// The page's policy with `frame-ancestors` set to `frame_ancestors` (a CSP source list); a
/// list that cannot be a header value falls back to `'none'`. The embeddable player sets its
/// own (`embed_frame_ancestors`); every other answer gets the node's.
pub fn content_security_policy(frame_ancestors: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{CSP}; frame-ancestors {frame_ancestors}"))
        .unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'none'"))
}

/// Middleware adding the node's security headers to every answer.
pub async fn add(
    State(headers): State<Arc<SecurityHeaders>>,
    req: Request,
    next: Next,
) -> Response {
    let mut res = next.run(req).await;
    headers.apply(&mut res);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_added_and_a_handlers_own_value_kept() {
        let h = SecurityHeaders::new("'none'");
        let mut res = Response::new(axum::body::Body::empty());
        res.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("origin"));
        h.apply(&mut res);
        let csp = res.headers()[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(res.headers()[header::REFERRER_POLICY], "origin");
        assert_eq!(res.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn a_bad_ancestor_list_falls_back_to_none() {
        let h = SecurityHeaders::new("bad\nvalue");
        assert_eq!(h.csp, "frame-ancestors 'none'");
    }
}

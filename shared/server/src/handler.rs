//! The handler pipeline (POMELO.md 3.3): before filters -> handler -> after filters, and the
//! rule that turns an error into a response: the error's response object, with `code: 500`
//! added when it has none.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Value, json};

/// A boxed future, as handlers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

type HandlerFn<S> = Arc<dyn Fn(S, Value) -> BoxFuture<Result<Value, HandlerError>> + Send + Sync>;

/// A failed request. What the client sees is [`HandlerError::response`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// Logged, never sent.
    pub message: String,
    /// The response object, if the handler chose one (e.g. `{"code":500,"error":true}`).
    pub response: Option<Value>,
}

impl HandlerError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            response: None,
        }
    }

    /// An error answered with this object (code 500 added if it has no `code`).
    pub fn with_response(message: impl Into<String>, response: Value) -> Self {
        Self {
            message: message.into(),
            response: Some(response),
        }
    }

    /// The response object: the chosen one or `{}`, with `code: 500` when it has no code.
    pub fn response(&self) -> Value {
        let mut resp = match &self.response {
            Some(Value::Object(m)) => Value::Object(m.clone()),
            _ => json!({}),
        };
        if let Value::Object(m) = &mut resp {
            m.entry("code").or_insert(json!(500));
        }
        resp
    }
}

/// The response body of a request: Pomelo sends `resp || {}`.
pub fn response_body(result: &Result<Value, HandlerError>) -> Vec<u8> {
    let value = match result {
        Ok(Value::Null) => json!({}),
        Ok(v) => v.clone(),
        Err(e) => e.response(),
    };
    serde_json::to_vec(&value).unwrap_or_else(|_| b"{\"code\":500}".to_vec())
}

/// A filter around handlers (`app.filter`); `S` is the session type the handlers see.
pub trait Filter<S>: Send + Sync {
    /// Runs before the handler; an error skips the handler and answers the client.
    fn before(&self, _route: &str, _session: &S, _body: &Value) -> Result<(), HandlerError> {
        Ok(())
    }
    /// Runs after the handler, in reverse order of registration (as Pomelo's after filters).
    fn after(&self, _route: &str, _session: &S, _result: &Result<Value, HandlerError>) {}
}

/// Handlers by route (`type.handler.method`) and the filters around them.
pub struct Handlers<S> {
    map: HashMap<String, HandlerFn<S>>,
    filters: Vec<Arc<dyn Filter<S>>>,
}

impl<S> std::fmt::Debug for Handlers<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut routes: Vec<&String> = self.map.keys().collect();
        routes.sort();
        f.debug_struct("Handlers").field("routes", &routes).finish()
    }
}

impl<S> Default for Handlers<S> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            filters: Vec::new(),
        }
    }
}

impl<S: Send + 'static> Handlers<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `f` for `route`.
    pub fn add<F, Fut>(&mut self, route: &str, f: F) -> &mut Self
    where
        F: Fn(S, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
    {
        self.map
            .insert(route.to_owned(), Arc::new(move |s, v| Box::pin(f(s, v))));
        self
    }

    pub fn filter(&mut self, f: impl Filter<S> + 'static) -> &mut Self {
        self.filters.push(Arc::new(f));
        self
    }

    pub fn has(&self, route: &str) -> bool {
        self.map.contains_key(route)
    }

    pub fn routes(&self) -> Vec<String> {
        let mut r: Vec<String> = self.map.keys().cloned().collect();
        r.sort();
        r
    }

    /// Runs the pipeline for one request.
    async fn handle(&self, route: &str, session: S, body: Value) -> Result<Value, HandlerError> {
        for f in &self.filters {
            f.before(route, &session, &body)?;
        }
        match self.map.get(route) {
            Some(h) => h(session, body).await,
            None => Err(HandlerError::new(format!("no handler for route {route}"))),
        }
    }

    /// Runs the pipeline with after filters; `S: Clone` so the filters see the session.
    pub async fn handle_filtered(&self, route: &str, session: S, body: Value) -> Result<Value, HandlerError>
    where
        S: Clone,
    {
        let for_after = session.clone();
        let result = self.handle(route, session, body).await;
        for f in self.filters.iter().rev() {
            f.after(route, &for_after, &result);
        }
        result
    }
}

/// A route split as Pomelo's `parseRoute` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteParts<'a> {
    pub server_type: &'a str,
    pub handler: &'a str,
    pub method: &'a str,
}

/// What to do with a route, before any handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteCheck<'a> {
    /// No dot: dropped silently (Pomelo's `checkServerType` fails).
    Drop,
    /// Not exactly three parts: answered `{"code":500}`.
    Invalid,
    /// Method `constructor`: the session is kicked with reason `attack`.
    Attack,
    Ok(RouteParts<'a>),
}

pub fn check_route(route: &str) -> RouteCheck<'_> {
    if !route.contains('.') {
        return RouteCheck::Drop;
    }
    let mut parts = route.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(server_type), Some(handler), Some(method), None) => {
            if method == "constructor" {
                RouteCheck::Attack
            } else {
                RouteCheck::Ok(RouteParts {
                    server_type,
                    handler,
                    method,
                })
            }
        }
        _ => RouteCheck::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn routes_are_checked_like_pomelo() {
        assert_eq!(check_route("nodots"), RouteCheck::Drop);
        assert_eq!(check_route("a.b"), RouteCheck::Invalid);
        assert_eq!(check_route("a.b.c.d"), RouteCheck::Invalid);
        assert_eq!(
            check_route("connector.entryHandler.constructor"),
            RouteCheck::Attack
        );
        assert!(matches!(check_route("chat.chatHandler.send"), RouteCheck::Ok(p) if p.server_type == "chat"));
    }

    #[test]
    fn an_error_response_gets_code_500_unless_it_has_a_code() {
        assert_eq!(HandlerError::new("x").response(), json!({"code": 500}));
        let e = HandlerError::with_response("dup", json!({"error": true}));
        assert_eq!(e.response(), json!({"code": 500, "error": true}));
        let e = HandlerError::with_response("busy", json!({"code": 503}));
        assert_eq!(e.response(), json!({"code": 503}));
        assert_eq!(response_body(&Ok(Value::Null)), b"{}");
    }

    struct Counting(Arc<AtomicUsize>, bool);
    impl Filter<()> for Counting {
        fn before(&self, _: &str, _: &(), _: &Value) -> Result<(), HandlerError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            if self.1 {
                Err(HandlerError::new("refused"))
            } else {
                Ok(())
            }
        }
        fn after(&self, _: &str, _: &(), _: &Result<Value, HandlerError>) {
            self.0.fetch_add(10, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn filters_run_around_the_handler_and_can_refuse() {
        let count = Arc::new(AtomicUsize::new(0));
        let mut h: Handlers<()> = Handlers::new();
        h.add("a.b.c", |_, body| async move { Ok(body) });
        h.filter(Counting(count.clone(), false));
        assert_eq!(h.handle_filtered("a.b.c", (), json!(1)).await, Ok(json!(1)));
        assert_eq!(count.load(Ordering::SeqCst), 11);
        assert!(h.handle_filtered("a.b.missing", (), json!(1)).await.is_err());

        let mut refusing: Handlers<()> = Handlers::new();
        refusing.add("a.b.c", |_, _| async move { panic!("must not run") });
        refusing.filter(Counting(count.clone(), true));
        assert!(refusing.handle_filtered("a.b.c", (), json!(1)).await.is_err());
    }
}

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
type BatchFn<S> = Arc<dyn Fn(Vec<(S, Value)>) -> BoxFuture<Vec<Result<Value, HandlerError>>> + Send + Sync>;

/// A route's handler: one request at a time, or several in one call.
enum Handler<S> {
    One(HandlerFn<S>),
    Batch(BatchFn<S>),
}

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
    map: HashMap<String, Handler<S>>,
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
        let f: HandlerFn<S> = Arc::new(move |s, v| Box::pin(f(s, v)));
        self.map.insert(route.to_owned(), Handler::One(f));
        self
    }

    /// Registers `f` for `route`, taking requests in batches: `f` answers one result per
    /// request, in order. A backend hands it the requests of one key (a room) that queued
    /// behind each other; a request that comes alone is a batch of one.
    pub fn add_batched<F, Fut>(&mut self, route: &str, f: F) -> &mut Self
    where
        F: Fn(Vec<(S, Value)>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<Value, HandlerError>>> + Send + 'static,
    {
        let f: BatchFn<S> = Arc::new(move |batch| Box::pin(f(batch)));
        self.map.insert(route.to_owned(), Handler::Batch(f));
        self
    }

    /// True when `route` takes its requests in batches ([`Handlers::add_batched`]).
    pub fn is_batched(&self, route: &str) -> bool {
        matches!(self.map.get(route), Some(Handler::Batch(_)))
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
            Some(Handler::One(h)) => h(session, body).await,
            Some(Handler::Batch(h)) => {
                let mut results = h(vec![(session, body)]).await;
                results
                    .pop()
                    .unwrap_or_else(|| Err(HandlerError::new("a batch handler answered nothing")))
            }
            None => Err(HandlerError::new(format!("no handler for route {route}"))),
        }
    }

    /// Runs the pipeline for requests of one batched route, in order: each passes the before
    /// filters on its own, those that pass go to the handler in one call, and the after filters
    /// see every result. A route that is not batched runs them one by one.
    pub async fn handle_batch_filtered(
        &self,
        route: &str,
        requests: Vec<(S, Value)>,
    ) -> Vec<Result<Value, HandlerError>>
    where
        S: Clone,
    {
        let Some(Handler::Batch(h)) = self.map.get(route) else {
            let mut results = Vec::with_capacity(requests.len());
            for (session, body) in requests {
                results.push(self.handle_filtered(route, session, body).await);
            }
            return results;
        };
        let sessions: Vec<S> = requests.iter().map(|(s, _)| s.clone()).collect();
        let mut results: Vec<Option<Result<Value, HandlerError>>> = Vec::with_capacity(requests.len());
        let mut admitted = Vec::with_capacity(requests.len());
        for (session, body) in requests {
            match self
                .filters
                .iter()
                .try_for_each(|f| f.before(route, &session, &body))
            {
                Ok(()) => {
                    admitted.push((session, body));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let expected = admitted.len();
        let mut answered = if admitted.is_empty() {
            Vec::new().into_iter()
        } else {
            h(admitted).await.into_iter()
        };
        let results: Vec<Result<Value, HandlerError>> = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    answered.next().unwrap_or_else(|| {
                        Err(HandlerError::new(format!(
                            "a batch handler answered fewer than {expected} requests"
                        )))
                    })
                })
            })
            .collect();
        for (session, result) in sessions.iter().zip(&results) {
            for f in self.filters.iter().rev() {
                f.after(route, session, result);
            }
        }
        results
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

    struct RefusesOdd(Arc<AtomicUsize>);
    impl Filter<()> for RefusesOdd {
        fn before(&self, _: &str, _: &(), body: &Value) -> Result<(), HandlerError> {
            match body.as_u64() {
                Some(n) if n % 2 == 1 => Err(HandlerError::new("odd")),
                _ => Ok(()),
            }
        }
        fn after(&self, _: &str, _: &(), _: &Result<Value, HandlerError>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_batched_route_gets_in_one_call_what_its_filters_let_through_and_answers_in_order() {
        let afters = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut h: Handlers<()> = Handlers::new();
        let seen = calls.clone();
        h.add_batched("a.b.c", move |batch: Vec<((), Value)>| {
            let seen = seen.clone();
            async move {
                let bodies: Vec<Value> = batch.into_iter().map(|(_, b)| b).collect();
                seen.lock().push(bodies.clone());
                bodies.into_iter().map(|b| Ok(json!({ "got": b }))).collect()
            }
        });
        h.filter(RefusesOdd(afters.clone()));
        assert!(h.is_batched("a.b.c"));
        let results = h
            .handle_batch_filtered("a.b.c", vec![((), json!(0)), ((), json!(1)), ((), json!(2))])
            .await;
        assert_eq!(*calls.lock(), vec![vec![json!(0), json!(2)]]);
        assert_eq!(results[0], Ok(json!({"got": 0})));
        assert!(results[1].is_err());
        assert_eq!(results[2], Ok(json!({"got": 2})));
        assert_eq!(
            afters.load(Ordering::SeqCst),
            3,
            "after filters see every request"
        );
        // One request alone goes through the same handler as a batch of one.
        assert_eq!(
            h.handle_filtered("a.b.c", (), json!(4)).await,
            Ok(json!({"got": 4}))
        );
    }
}

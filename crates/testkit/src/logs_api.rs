//! `GET .../pods/NAME/log`: picks the container (400 for a bad name), answers 204 while the pod
//! is not on a node (fixture 12), 400 while its container waits to start, and otherwise streams
//! the container's [`LogBuffer`](crate::logs::LogBuffer) with the query's options and the
//! log-cut fault for follow streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use futures::StreamExt as _;
use http::header;

use crate::cluster::Shared;
use crate::logs::{LogCut, LogQuery};
use crate::resource::Resource;
use crate::status::ApiError;

fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, ApiError> {
    q.get(key)
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                ApiError::bad_request(format!("{key}: Invalid value: \"{v}\": must be a number"))
            })
        })
        .transpose()
}

/// Parses the log options of a request.
pub(crate) fn parse_query(q: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let since_time = q
        .get("sinceTime")
        .map(|t| {
            t.parse::<jiff::Timestamp>().map_err(|e| {
                ApiError::bad_request(format!("sinceTime: Invalid value: \"{t}\": {e}"))
            })
        })
        .transpose()?;
    Ok(LogQuery {
        follow: flag("follow"),
        timestamps: flag("timestamps"),
        since_time,
        since_seconds: number(q, "sinceSeconds")?,
        tail_lines: number(q, "tailLines")?,
        limit_bytes: number(q, "limitBytes")?,
    })
}

/// Serves one log request.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let pod = shared
        .store
        .get(Resource::Pods, ns, name)
        .ok_or_else(|| ApiError::not_found(Resource::Pods, name))?;
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match q.get("container") {
        Some(c) if containers.contains(&c.as_str()) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() == 1 => containers[0].to_owned(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let query = parse_query(q)?;
    if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
        return Ok(Response::builder()
            .status(204)
            .body(Body::empty())
            .unwrap_or_default());
    }
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let Some(buffer) = shared.node.logs(uid, &container) else {
        let waiting = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"].as_str() == Some(container.as_str()))
            .and_then(|s| s["state"]["waiting"]["reason"].as_str())
            .unwrap_or("ContainerCreating");
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {waiting}"
        )));
    };
    if shared.faults.take_log_error() {
        let id = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"].as_str() == Some(container.as_str()))
            .and_then(|s| s["containerID"].as_str())
            .unwrap_or("containerd://0000000000000000");
        return Ok(Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(format!(
                "unable to retrieve container logs for {id}"
            )))
            .unwrap_or_default());
    }
    let cut = if query.follow {
        shared.faults.current_log_cut()
    } else {
        LogCut::Never
    };
    let follow = query.follow;
    let mut refusals = shared.faults.refusals();
    refusals.borrow_and_update();
    // A refused-connections fault ends follow streams, as a server going away would.
    let refused = async move {
        if follow {
            let _ = refusals.changed().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let stream = buffer
        .read(query, cut)
        .take_until(refused)
        .map(Ok::<_, Infallible>);
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_options_parse_and_bad_numbers_are_400() {
        let q: HashMap<String, String> = [
            ("follow", "true"),
            ("timestamps", "true"),
            ("sinceTime", "2026-11-27T14:24:43.5Z"),
            ("tailLines", "2"),
            ("limitBytes", "20"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let parsed = parse_query(&q).unwrap();
        assert!(parsed.follow && parsed.timestamps);
        assert_eq!(parsed.tail_lines, Some(2));
        assert_eq!(parsed.limit_bytes, Some(20));
        assert!(parsed.since_time.is_some());
        let bad: HashMap<String, String> = [("tailLines".to_owned(), "x".to_owned())].into();
        assert_eq!(parse_query(&bad).unwrap_err().code, 400);
    }
}

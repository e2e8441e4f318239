//! Test component written the way wasmCloud's documentation and examples write one: the
//! `wasmcloud-component` 0.2 crate's `http::Server`, its pre-generated `wasi` and `wasmcloud`
//! bindings and its logging macros; nothing Ferry-specific. The compatibility suite
//! (`tests/all/wasmcloud.rs`) deploys it with wasmCloud's link config keys.
//!
//! Routes (path segments after the first name the command):
//! * `GET /counter/NAME` — increment NAME in bucket `default` (the keyvalue-counter example);
//! * `PUT /kv/KEY` (body), `GET /kv/KEY`, `DELETE /kv/KEY`, `GET /kv` (list keys);
//! * `GET /kv-link/LINK/KEY` — open the bucket, then pick LINK with `wasmcloud:bus/lattice`,
//!   then read: the call goes where the link in force at call time says;
//! * `PUT /blob/CONTAINER/OBJECT` (body), `GET /blob/CONTAINER/OBJECT`,
//!   `DELETE /blob/CONTAINER/OBJECT`, `GET /blob/CONTAINER` (object names, one per line) —
//!   the blobby example's calls;
//! * `GET /config/KEY` — `wasi:config/store.get`;
//! * `POST /publish/SUBJECT` (body) — `wasmcloud:messaging/consumer.publish`.

use std::io::{Read as _, Write as _};

use wasmcloud_component::http::{self, ErrorCode, StatusCode};
use wasmcloud_component::wasi::blobstore::{blobstore, types as blob_types};
use wasmcloud_component::wasi::{config, keyvalue};
use wasmcloud_component::wasmcloud::bus::lattice;
use wasmcloud_component::wasmcloud::messaging::{consumer, types::BrokerMessage};
use wasmcloud_component::{error, info};

struct Component;

http::export!(Component);

impl http::Server for Component {
    fn handle(request: http::IncomingRequest) -> http::Result<http::Response<impl http::OutgoingBody>> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let mut body = Vec::new();
        let (_, mut incoming) = request.into_parts();
        incoming.read_to_end(&mut body).map_err(|e| ErrorCode::InternalError(Some(e.to_string())))?;
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        info!("{method} {path}");
        let answer = route(method.as_str(), &segments, body);
        let (status, text) = match answer {
            Ok(text) => (StatusCode::OK, text),
            Err((status, text)) => {
                error!("{method} {path}: {text}");
                (status, text)
            }
        };
        let mut response = http::Response::new(text);
        *response.status_mut() = status;
        Ok(response)
    }
}

type Answer = Result<String, (StatusCode, String)>;

fn fail(err: impl std::fmt::Debug) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:?}"))
}

fn route(method: &str, segments: &[&str], body: Vec<u8>) -> Answer {
    match (method, segments) {
        ("GET", ["counter", name]) => {
            let bucket = keyvalue::store::open("default").map_err(fail)?;
            let count = keyvalue::atomics::increment(&bucket, name, 1).map_err(fail)?;
            Ok(count.to_string())
        }
        ("PUT", ["kv", key]) => {
            let bucket = keyvalue::store::open("default").map_err(fail)?;
            bucket.set(key, &body).map_err(fail)?;
            Ok("stored".into())
        }
        ("GET", ["kv", key]) => {
            let bucket = keyvalue::store::open("default").map_err(fail)?;
            match bucket.get(key).map_err(fail)? {
                Some(value) => Ok(String::from_utf8_lossy(&value).into_owned()),
                None => Err((StatusCode::NOT_FOUND, format!("no key {key}"))),
            }
        }
        ("DELETE", ["kv", key]) => {
            let bucket = keyvalue::store::open("default").map_err(fail)?;
            bucket.delete(key).map_err(fail)?;
            Ok("deleted".into())
        }
        ("GET", ["kv"]) => {
            let bucket = keyvalue::store::open("default").map_err(fail)?;
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = bucket.list_keys(cursor).map_err(fail)?;
                keys.extend(page.keys);
                cursor = page.cursor;
                if cursor.is_none() {
                    break;
                }
            }
            keys.sort();
            Ok(keys.join("\n"))
        }
        ("GET", ["kv-link", link, key]) => {
            let bucket = keyvalue::store::open("default").map_err(fail)?;
            let store = lattice::CallTargetInterface::new("wasi", "keyvalue", "store");
            lattice::set_link_name(link, vec![store]).map_err(fail)?;
            let value = bucket.get(key).map_err(fail)?;
            Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default())
        }
        ("PUT", ["blob", container, object]) => {
            let (container, object) = (container.to_string(), object.to_string());
            let container = match blobstore::container_exists(&container).map_err(fail)? {
                true => blobstore::get_container(&container).map_err(fail)?,
                false => blobstore::create_container(&container).map_err(fail)?,
            };
            let value = blob_types::OutgoingValue::new_outgoing_value();
            {
                let mut stream = value.outgoing_value_write_body().map_err(fail)?;
                stream.write_all(&body).map_err(fail)?;
                stream.flush().map_err(fail)?;
            }
            container.write_data(&object, &value).map_err(fail)?;
            blob_types::OutgoingValue::finish(value).map_err(fail)?;
            Ok(format!("{} bytes", body.len()))
        }
        ("GET", ["blob", container, object]) => {
            let (container, object) = (container.to_string(), object.to_string());
            let container = blobstore::get_container(&container).map_err(fail)?;
            let info = container.object_info(&object).map_err(fail)?;
            let end = info.size.saturating_sub(1);
            let value = container.get_data(&object, 0, end).map_err(fail)?;
            let data = blob_types::IncomingValue::incoming_value_consume_sync(value).map_err(fail)?;
            Ok(String::from_utf8_lossy(&data).into_owned())
        }
        ("DELETE", ["blob", container, object]) => {
            let (container, object) = (container.to_string(), object.to_string());
            let container = blobstore::get_container(&container).map_err(fail)?;
            container.delete_object(&object).map_err(fail)?;
            Ok("deleted".into())
        }
        ("GET", ["blob", container]) => {
            let container = container.to_string();
            let container = blobstore::get_container(&container).map_err(fail)?;
            let names = container.list_objects().map_err(fail)?;
            let mut all = Vec::new();
            loop {
                let (batch, end) = names.read_stream_object_names(100).map_err(fail)?;
                all.extend(batch);
                if end {
                    break;
                }
            }
            all.sort();
            Ok(all.join("\n"))
        }
        ("GET", ["config", key]) => match config::store::get(key).map_err(fail)? {
            Some(value) => Ok(value),
            None => Err((StatusCode::NOT_FOUND, format!("no config {key}"))),
        },
        ("POST", ["publish", subject]) => {
            consumer::publish(&BrokerMessage { subject: (*subject).to_owned(), body, reply_to: None })
                .map_err(fail)?;
            Ok("published".into())
        }
        _ => Err((StatusCode::NOT_FOUND, format!("no route {method} /{}", segments.join("/")))),
    }
}

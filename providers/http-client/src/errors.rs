//! Why a request failed, as the `wasi:http` error code the component gets: the one conversion
//! from hyper's, the connector's and rustls's errors.

use std::error::Error as _;

use ferry_provider_sdk::http_client::{HttpError, HttpErrorCode};

/// The code for a failed `Client::request`: what the error chain says went wrong.
pub(crate) fn from_client(err: &hyper_util::client::legacy::Error) -> HttpError {
    let message = chain(err);
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            let code = match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    HttpErrorCode::TlsCertificateError
                }
                _ => HttpErrorCode::TlsProtocolError,
            };
            return HttpError::new(code, message);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            let code = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => HttpErrorCode::ConnectionRefused,
                std::io::ErrorKind::TimedOut => HttpErrorCode::ConnectionTimeout,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                    HttpErrorCode::ConnectionTerminated
                }
                std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
                    HttpErrorCode::DestinationUnavailable
                }
                // A TLS error travels inside an io::Error from tokio-rustls.
                _ if io.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) => {
                    let invalid = message.contains("certificate");
                    let code =
                        if invalid { HttpErrorCode::TlsCertificateError } else { HttpErrorCode::TlsProtocolError };
                    return HttpError::new(code, message);
                }
                _ => {
                    source = cause.source();
                    continue;
                }
            };
            return HttpError::new(code, message);
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            let code = if hyper.is_incomplete_message() || hyper.is_closed() {
                HttpErrorCode::HttpResponseIncomplete
            } else {
                HttpErrorCode::HttpProtocolError
            };
            return HttpError::new(code, message);
        }
        source = cause.source();
    }
    // The connector says "dns error" for a name that does not resolve.
    if err.is_connect() {
        let code = if message.contains("dns error") || message.contains("failed to lookup address") {
            HttpErrorCode::DnsError
        } else {
            HttpErrorCode::DestinationUnavailable
        };
        return HttpError::new(code, message);
    }
    HttpError::new(HttpErrorCode::InternalError, message)
}

/// The error and its causes, one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

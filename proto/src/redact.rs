//! Keeping secrets out of logs, errors, acks and events: the one place that knows how to show
//! a URL without its credentials.

/// `url` (or a comma-separated list of URLs) with any `user:password@` or `token@` part
/// replaced by `***@`, so it can be logged, returned in an error or put in an event.
pub fn url(url: &str) -> String {
    url.split(',').map(one).collect::<Vec<_>>().join(",")
}

fn one(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // The authority ends at the first '/', '?' or '#'; credentials end at its last '@'.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_hidden_and_the_rest_kept() {
        assert_eq!(super::url("nats://user:s3cret@host:4222"), "nats://***@host:4222");
        assert_eq!(super::url("redis://:pw@127.0.0.1:6379/0"), "redis://***@127.0.0.1:6379/0");
        assert_eq!(super::url("nats://tok@a,nats://b:4222"), "nats://***@a,nats://b:4222");
        assert_eq!(super::url("tls://u:p@h/path?x=a@b"), "tls://***@h/path?x=a@b");
        assert_eq!(super::url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(super::url("unix:///tmp/redis.sock"), "unix:///tmp/redis.sock");
        assert_eq!(super::url("u:p@host"), "***@host");
    }
}

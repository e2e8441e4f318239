//! Container and object names: what a component may ask for, checked before any backend runs.
//! A name that could leave its container — `..`, an absolute path, an empty segment, a NUL
//! byte — is refused with `bad-request`, so no backend ever sees one.

use ferry_provider_sdk::RpcError;

/// Prefix of the provider's own temporary files; no name may start with it.
pub(crate) const TEMP_PREFIX: &str = ".ferry-tmp-";

/// Check a container name: one path segment.
pub(crate) fn container(name: &str) -> Result<(), RpcError> {
    segment(name).map_err(|why| RpcError::bad_request(format!("invalid container name {name:?}: {why}")))
}

/// Check an object name: `/`-separated segments, none empty, `.` or `..`.
pub(crate) fn object(name: &str) -> Result<(), RpcError> {
    let bad = |why: &str| RpcError::bad_request(format!("invalid object name {name:?}: {why}"));
    if name.len() > 1024 {
        return Err(bad("longer than 1024 bytes"));
    }
    if name.starts_with('/') {
        return Err(bad("absolute paths are not names"));
    }
    for part in name.split('/') {
        segment(part).map_err(bad)?;
    }
    Ok(())
}

fn segment(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        Err("empty name or segment")
    } else if part == "." || part == ".." {
        Err("`.` and `..` are not names")
    } else if part.contains('\0') {
        Err("NUL byte")
    } else if part.contains('/') {
        Err("`/` in a container name")
    } else if part.len() > 255 {
        Err("segment longer than 255 bytes")
    } else if part.starts_with(TEMP_PREFIX) {
        Err("reserved prefix")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused_and_ordinary_names_pass() {
        for bad in ["", ".", "..", "../x", "a/../../x", "/etc/passwd", "a//b", "a/", "a\0b", ".ferry-tmp-1"] {
            assert!(object(bad).is_err(), "{bad:?} accepted as object");
        }
        for bad in ["", "..", "a/b", "/x", "x\0"] {
            assert!(container(bad).is_err(), "{bad:?} accepted as container");
        }
        for good in ["a", "a.b", "dir/file.txt", "..x", "x..", "spaces are fine"] {
            assert!(object(good).is_ok(), "{good:?} refused");
        }
        assert!(container("photos").is_ok());
    }
}

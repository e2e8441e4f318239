//! W3C trace context (`traceparent`) as Ferry carries it: in an invocation's `trace_context`
//! (covered by its MAC), taken from and returned in HTTP `traceparent` headers, so one call can
//! be followed through the provider, NATS, the host, the component and back.

use std::fmt;

/// The key of the W3C `traceparent` entry in an invocation's trace context.
pub const TRACEPARENT: &str = "traceparent";

/// One W3C `traceparent`: version 00, a trace id, the id of the span that made the call, and
/// flags (bit 0: sampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace, 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// The calling span, 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// Trace flags; 0x01 = sampled.
    pub flags: u8,
}

impl TraceParent {
    /// Parse `00-{32 hex}-{16 hex}-{2 hex}`; `None` for anything else (W3C: an invalid header is
    /// ignored, and a new trace starts).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let trace_id: [u8; 16] = hex(trace)?.try_into().ok()?;
        let span_id: [u8; 8] = hex(span)?.try_into().ok()?;
        let [flags]: [u8; 1] = hex(flags)?.try_into().ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, span_id, flags })
    }

    /// The `traceparent` of an invocation's trace context, when it carries a valid one.
    pub fn of(context: &std::collections::BTreeMap<String, String>) -> Option<Self> {
        context.get(TRACEPARENT).and_then(|text| Self::parse(text))
    }

    /// A new trace, sampled, with a fresh span.
    pub fn root() -> Self {
        let trace_id = *uuid::Uuid::new_v4().as_bytes();
        Self { trace_id, span_id: new_span_id(), flags: 1 }
    }

    /// The same trace with a fresh span: what a call made within this one carries.
    #[must_use]
    pub fn child(&self) -> Self {
        Self { span_id: new_span_id(), ..*self }
    }

    /// The trace id as 32 lowercase hex characters.
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex characters.
    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace_id_hex(), self.span_id_hex(), self.flags)
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let bytes = uuid::Uuid::new_v4();
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes.as_bytes()[..8]);
        if id != [0; 8] {
            return id;
        }
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_format_and_make_children() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(text).unwrap();
        assert_eq!(parent.to_string(), text);
        assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(TraceParent::parse(&child.to_string()), Some(child));
        let root = TraceParent::root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}

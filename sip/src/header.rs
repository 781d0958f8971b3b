//! Header names: case-insensitive matching, compact forms (RFC 3261 §7.3.3 and the IANA
//! registry), canonical spelling for printing.

use std::fmt;

macro_rules! header_names {
    ($( $variant:ident => $canon:literal, $lower:literal $(, $compact:literal)? ;)*) => {
        /// A header name. Known headers are variants; anything else keeps its spelling.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum HeaderName {
            $(
                #[doc = $canon]
                $variant,
            )*
            /// A header DCE does not know by name, spelled as received.
            Other(String),
        }

        impl HeaderName {
            /// Map a header name (long or compact form, any case) to a [`HeaderName`].
            pub fn from_wire(s: &str) -> HeaderName {
                // Lower-case into a stack buffer, then one `match` on the string.
                let mut buf = [0u8; 24];
                if s.len() > buf.len() {
                    return HeaderName::Other(s.to_owned());
                }
                for (d, c) in buf.iter_mut().zip(s.bytes()) {
                    *d = c.to_ascii_lowercase();
                }
                let lower = std::str::from_utf8(&buf[..s.len()]).unwrap_or("");
                match lower {
                    $( $lower $(| $compact)? => HeaderName::$variant, )*
                    _ => HeaderName::Other(s.to_owned()),
                }
            }

            /// The canonical spelling used when DCE prints the header.
            pub fn as_str(&self) -> &str {
                match self {
                    $( HeaderName::$variant => $canon, )*
                    HeaderName::Other(s) => s,
                }
            }
        }
    };
}

header_names! {
    Via => "Via", "via", "v";
    From => "From", "from", "f";
    To => "To", "to", "t";
    CallId => "Call-ID", "call-id", "i";
    CSeq => "CSeq", "cseq";
    MaxForwards => "Max-Forwards", "max-forwards";
    Contact => "Contact", "contact", "m";
    ContentType => "Content-Type", "content-type", "c";
    ContentLength => "Content-Length", "content-length", "l";
    ContentEncoding => "Content-Encoding", "content-encoding", "e";
    Route => "Route", "route";
    RecordRoute => "Record-Route", "record-route";
    Require => "Require", "require";
    ProxyRequire => "Proxy-Require", "proxy-require";
    Supported => "Supported", "supported", "k";
    Unsupported => "Unsupported", "unsupported";
    Allow => "Allow", "allow";
    Accept => "Accept", "accept";
    Subject => "Subject", "subject", "s";
    Expires => "Expires", "expires";
    Reason => "Reason", "reason";
    RetryAfter => "Retry-After", "retry-after";
    Timestamp => "Timestamp", "timestamp";
    UserAgent => "User-Agent", "user-agent";
    Server => "Server", "server";
    PAssertedIdentity => "P-Asserted-Identity", "p-asserted-identity";
    SessionExpires => "Session-Expires", "session-expires", "x";
    Event => "Event", "event", "o";
    ReferTo => "Refer-To", "refer-to", "r";
    ReferredBy => "Referred-By", "referred-by", "b";
    AllowEvents => "Allow-Events", "allow-events", "u";
    Identity => "Identity", "identity", "y";
    AcceptContact => "Accept-Contact", "accept-contact", "a";
    RejectContact => "Reject-Contact", "reject-contact", "j";
    RequestDisposition => "Request-Disposition", "request-disposition", "d";
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case() {
        assert_eq!(HeaderName::from_wire("v"), HeaderName::Via);
        assert_eq!(
            HeaderName::from_wire("MaX-fOrWaRdS"),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::from_wire("l"), HeaderName::ContentLength);
        assert_eq!(
            HeaderName::from_wire("C%6Fntact"),
            HeaderName::Other("C%6Fntact".into())
        );
        assert_eq!(HeaderName::CallId.as_str(), "Call-ID");
    }
}
